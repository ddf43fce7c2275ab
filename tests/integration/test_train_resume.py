"""tools/train.py and tools/test.py end to end at a tiny scale: an interrupted run resumed with --ckpt
ends exactly like an uninterrupted one (weights and metrics), a NaN loss stops with a clear message,
torchrun trains with two CPU processes, and a checkpoint trained on the embedded synthetic data runs
on real KITTI frames."""
import json

import pytest
import torch

from pcdet.datasets.kitti.kitti_dataset import create_kitti_infos
from pcdet.datasets.synthetic.build import generate_dataset
from pcdet.train_utils.experiment import load_experiment_cfg
from pcdet.utils.paths import REPO_ROOT

CFG = REPO_ROOT / "tools" / "cfgs" / "synthetic_models" / "pointpillar_16x.yaml"


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("syn")
    generate_dataset(root, frames=6, seed=5, val_fraction=0.5)
    cfg = load_experiment_cfg(CFG)
    create_kitti_infos(cfg.DATA_CONFIG, cfg.CLASS_NAMES, root, workers=0)
    return root


def _args(data, out, tag, *extra):
    return ["--cfg_file", str(CFG), "--epochs", "2", "--batch_size", "2", "--workers", "0", "--seed", "3",
            "--extra_tag", tag, "--output_root", str(out), "--no_progress", *extra,
            "--set", "DATA_CONFIG.DATA_PATH", str(data),
            "DATA_CONFIG.POINT_CLOUD_RANGE", "[0, -12.8, -3, 25.6, 12.8, 1]"]



def _train_main():
    import importlib.util

    spec = importlib.util.spec_from_file_location("pcdet_tools_train", REPO_ROOT / "tools" / "train.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.main


def test_resume_reproduces_uninterrupted_run(tiny_data, tmp_path):
    main = _train_main()
    main(_args(tiny_data, tmp_path, "straight"))
    main(_args(tiny_data, tmp_path, "resumed", "--stop_after_epoch", "1"))
    resumed_dir = tmp_path / "synthetic_models" / "pointpillar_16x" / "resumed"
    assert (resumed_dir / "ckpt" / "checkpoint_epoch_1.pth").is_file()
    assert not (resumed_dir / "ckpt" / "checkpoint_epoch_2.pth").exists()
    assert not (resumed_dir / "eval").exists()
    main(_args(tiny_data, tmp_path, "resumed", "--ckpt", "latest"))

    straight_dir = tmp_path / "synthetic_models" / "pointpillar_16x" / "straight"
    a = torch.load(straight_dir / "ckpt" / "checkpoint_epoch_2.pth", weights_only=False)
    b = torch.load(resumed_dir / "ckpt" / "checkpoint_epoch_2.pth", weights_only=False)
    assert a["model_state"].keys() == b["model_state"].keys()
    for key in a["model_state"]:
        assert torch.equal(a["model_state"][key], b["model_state"][key]), key
    ma = json.loads((straight_dir / "eval" / "epoch_2" / "val" / "metrics.json").read_text())
    mb = json.loads((resumed_dir / "eval" / "epoch_2" / "val" / "metrics.json").read_text())
    assert ma["metrics"] == mb["metrics"] and ma["recall"] == mb["recall"]
    assert ma["num_detections"] == mb["num_detections"]
    from pcdet.datasets.dataset import SYNTHETIC_MANIFEST
    from pcdet.datasets.synthetic.writers import MANIFEST_NAME

    assert SYNTHETIC_MANIFEST == MANIFEST_NAME
    assert "SYNTHETIC" in ma["dataset_note"]  # every output of the embedded dataset says so


def test_nan_loss_stops_with_clear_message(tiny_data, tmp_path, caplog):
    main = _train_main()
    with pytest.raises(SystemExit) as info:
        # a learning rate of 1e30 makes the weights, and then the loss, non-finite
        main(_args(tiny_data, tmp_path, "nan") + ["OPTIMIZATION.LR", "1.0e+30"])
    assert info.value.code == 2
    log = (tmp_path / "synthetic_models" / "pointpillar_16x" / "nan").glob("train_*.log")
    text = "".join(p.read_text() for p in log)
    assert "non-finite loss" in text and "last good checkpoint" in text


def test_torchrun_ddp_two_processes_on_cpu(tiny_data, tmp_path):
    """``torchrun --nproc_per_node 2 tools/train.py --launcher pytorch`` (gloo on CPU) trains and writes
    the same kind of checkpoint as a single process."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(REPO_ROOT / "tools" / "train.py"), "--launcher", "pytorch",
           *_args(tiny_data, tmp_path, "ddp")]
    cmd[cmd.index("--epochs") + 1] = "1"
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = tmp_path / "synthetic_models" / "pointpillar_16x" / "ddp"
    log = "".join(p.read_text() for p in out.glob("train_*.log"))
    assert "world size 2" in log
    ckpt = torch.load(out / "ckpt" / "checkpoint_epoch_1.pth", weights_only=False)
    assert {"model_state", "optimizer_state", "epoch"} <= set(ckpt)
    assert not any(k.startswith("module.") for k in ckpt["model_state"])  # saved unwrapped
    assert (out / "eval" / "epoch_1" / "val" / "metrics.json").is_file()


def test_synthetic_checkpoint_runs_on_real_kitti_frames(tiny_data, tmp_path, real_kitti):
    """A checkpoint trained on the embedded data runs inference on the real frames: result files are
    written, and the read-only dataset folder is left untouched (infos go to --save_path)."""
    import importlib.util

    before = sorted(p.relative_to(real_kitti) for p in real_kitti.rglob("*"))
    main = _train_main()
    main(_args(tiny_data, tmp_path, "for_real", "--no_eval") + [])
    ckpt = tmp_path / "synthetic_models" / "pointpillar_16x" / "for_real" / "ckpt" / "checkpoint_epoch_2.pth"
    infos = tmp_path / "real_infos"
    cfg = load_experiment_cfg(CFG)
    create_kitti_infos(cfg.DATA_CONFIG, cfg.CLASS_NAMES, real_kitti, save_path=infos, workers=0)
    spec = importlib.util.spec_from_file_location("pcdet_tools_test", REPO_ROOT / "tools" / "test.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    results = mod.main(["--cfg_file", str(CFG), "--ckpt", str(ckpt), "--data_path", str(real_kitti),
                        "--infos_dir", str(infos), "--workers", "0", "--batch_size", "2",
                        "--output_root", str(tmp_path), "--extra_tag", "real", "--no_progress"])
    assert len(results) == 1
    out = tmp_path / "synthetic_models" / "pointpillar_16x" / "real" / "eval" / "epoch_2" / "val"
    ids = (real_kitti / "ImageSets" / "val.txt").read_text().split()
    files = sorted(p.stem for p in (out / "final_result" / "data").glob("*.txt"))
    assert files == sorted(ids)
    for f in (out / "final_result" / "data").glob("*.txt"):
        assert all(len(line.split()) == 16 for line in f.read_text().splitlines())
    metrics = json.loads((out / "metrics.json").read_text())
    assert "Car_3d/moderate_R40" in metrics["metrics"] and metrics["dataset_note"] == "KITTI"
    assert sorted(p.relative_to(real_kitti) for p in real_kitti.rglob("*")) == before
