"""What ``tools/train.py`` and ``tools/test.py`` share: config loading, output folders, devices, DDP set-up."""
import os
from pathlib import Path

import torch

from pcdet.config import cfg_from_list, cfg_from_yaml_file
from pcdet.utils.paths import REPO_ROOT


def load_experiment_cfg(cfg_file, set_cfgs=None):
    """Load a model or KD config (``_BASE_CONFIG_`` resolved) and apply ``--set`` overrides.

    A ``KD`` section is resolved around the overrides (:mod:`pcdet.kd.config`): before them,
    ``KD.TEACHER.CFG_FILE`` (relative to ``cfg_file``'s folder) is loaded into ``KD.TEACHER``;
    after them, the section is checked and a teacher that voxelises differently from the student
    gets its own ``KEY_SUFFIX: _tea`` voxeliser in ``DATA_CONFIG.DATA_PROCESSOR``.
    """
    cfg = cfg_from_yaml_file(cfg_file)
    if "KD" in cfg:
        from pcdet.kd.config import resolve_teacher_cfg_file

        resolve_teacher_cfg_file(cfg, cfg_file)
    if set_cfgs:
        cfg_from_list(list(set_cfgs), cfg)
    if "KD" in cfg:
        from pcdet.kd.config import finalize_kd_cfg

        finalize_kd_cfg(cfg)
    return cfg


def experiment_name(cfg_file):
    """``tools/cfgs/kitti_models/pointpillar.yaml`` -> ``kitti_models/pointpillar``;
    ``kd_cfgs/kitti/x.yaml`` -> ``kd_cfgs/kitti/x``; a file outside the repository -> its stem."""
    path = Path(cfg_file).resolve()
    try:
        rel = path.relative_to(REPO_ROOT)
    except ValueError:
        return path.stem
    parts = list(rel.with_suffix("").parts)
    if parts[:2] == ["tools", "cfgs"]:
        parts = parts[2:]
    return str(Path(*parts))


def output_dir_for(cfg_file, extra_tag="default", output_root=None):
    """``<output_root or REPO_ROOT/output>/<experiment name>/<extra_tag>`` (independent of the cwd)."""
    root = Path(output_root) if output_root else REPO_ROOT / "output"
    return root / experiment_name(cfg_file) / extra_tag


def apply_data_overrides(cfg, data_path=None, infos_dir=None):
    """``--data_path`` / ``--infos_dir`` of tools/train.py and tools/test.py: point ``DATA_CONFIG`` at
    another dataset root, and read the info and ground-truth-database pickles from ``infos_dir``
    (written there by ``create_kitti_infos --save_path``) so a read-only dataset is never written."""
    from pathlib import Path

    data_cfg = cfg.DATA_CONFIG
    if data_path is not None:
        data_cfg.DATA_PATH = str(Path(data_path).resolve())
    if infos_dir is not None:
        infos_dir = Path(infos_dir).resolve()
        for mode, rels in data_cfg.INFO_PATH.items():
            data_cfg.INFO_PATH[mode] = [str(infos_dir / Path(rel).name) for rel in rels]
        for aug in (data_cfg.get("DATA_AUGMENTOR") or {}).get("AUG_CONFIG_LIST", []) or []:
            if aug.get("NAME") == "gt_sampling":
                aug.DB_INFO_PATH = [str(infos_dir / Path(rel).name) for rel in aug.DB_INFO_PATH]
    return cfg


def resolve_device(name="auto"):
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda requested but CUDA is not available")
    return torch.device(name)


def init_distributed(launcher, device):
    """``none`` -> (False, 0, 1); ``pytorch`` (torchrun) -> init the process group (gloo on CPU)."""
    if launcher == "none":
        return False, 0, 1
    if launcher != "pytorch":
        raise ValueError(f"--launcher {launcher!r}: use none or pytorch")
    import torch.distributed as dist

    backend = "nccl" if device.type == "cuda" else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if device.type == "cuda":
        torch.cuda.set_device(local_rank)
    return True, dist.get_rank(), dist.get_world_size()
