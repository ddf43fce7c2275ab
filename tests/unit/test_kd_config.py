"""KD configs: loading from anywhere, TEACHER.CFG_FILE, and the teacher's own voxeliser."""
import os
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml

from pcdet.config import ConfigError
from pcdet.datasets.dataset import DatasetTemplate
from pcdet.kd.config import finalize_kd_cfg, voxeliser_of
from pcdet.kd.wrapper import DistillationWrapper, TeacherInputError
from pcdet.models import build_network, load_data_to_device
from pcdet.train_utils.experiment import load_experiment_cfg
from pcdet.utils.paths import REPO_ROOT
from tests.helpers import load_synthetic_and_kitti_twin

KITTI_KD = sorted((REPO_ROOT / "kd_cfgs" / "kitti").glob("pointpillar_*.yaml"))  # SECOND: test_second_kd.py
SMALL_RANGE = [0, -5.12, -3, 10.24, 5.12, 1]


pytestmark = pytest.mark.usefixtures("single_thread")


def _dataset_view(cfg, training=False):
    pc_range = np.array(cfg.DATA_CONFIG.POINT_CLOUD_RANGE, dtype=np.float32)
    vs = np.array(voxeliser_of(cfg.DATA_CONFIG).VOXEL_SIZE, dtype=np.float32)
    grid = np.round((pc_range[3:] - pc_range[:3]) / vs).astype(np.int64)
    return SimpleNamespace(class_names=cfg.CLASS_NAMES, training=training,
                           data_processor=SimpleNamespace(grid_size=grid, point_cloud_range=pc_range, voxel_size=vs),
                           point_feature_encoder=SimpleNamespace(num_point_features=4))


BASELINE_CLASSES = {
    "hinton": "HintonKD", "fitnet": "FitNet", "attention_transfer": "AttentionTransfer",
    "similarity_preserving": "SimilarityPreserving", "crd": "CRD", "overhaul": "Overhaul", "zhang_ma": "ZhangMa",
    "sessd": "SESSDConsistency", "multiframe": "MultiFrameConsistency", "sparsekd": "SparseKD", "pvd_det": "PVDDet",
    "paint_and_distill": "PaintAndDistill",
}


def test_kitti_kd_configs_exist():
    names = {p.stem for p in KITTI_KD}
    assert {"pointpillar_4x_pointdistiller", "pointpillar_16x_pointdistiller", "pointpillar_l8_pointdistiller",
            "pointpillar_l5_pointdistiller", "pointpillar_l3_pointdistiller", "pointpillar_4x_pointdistiller_ld_only",
            "pointpillar_4x_pointdistiller_rl_only", "pointpillar_4x_featurekd"} <= names
    assert {f"pointpillar_4x_{k}" for k in BASELINE_CLASSES} <= names


@pytest.mark.parametrize("path", KITTI_KD, ids=lambda p: p.stem)
def test_kd_config_loads_from_another_directory_and_builds(path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_experiment_cfg(os.path.relpath(path, tmp_path))
    assert cfg.KD.TEACHER.MODEL.VFE.NUM_FILTERS == [64] and cfg.KD.TEACHER.CKPT is None
    assert cfg.KD.TEACHER.DATA_CONFIG == cfg.DATA_CONFIG  # same voxels: no second voxeliser
    model = build_network(cfg.MODEL, len(cfg.CLASS_NAMES), _dataset_view(cfg), kd_cfg=cfg.KD)
    assert isinstance(model, DistillationWrapper) and model.teacher_suffix == ""
    method = model.kd_methods[0]
    stem = path.stem
    baseline = BASELINE_CLASSES.get(stem.replace("pointpillar_4x_", ""))
    if baseline is not None:  # the twelve baselines: their method on the 4x student
        assert type(method).__name__ == baseline
        assert cfg.MODEL.BACKBONE_2D.NUM_FILTERS == [32, 64, 128]
    elif "featurekd" in stem:
        assert method.n is None
    else:
        assert method.feature == "pillar_features" and method.k == 128 and method.n == (12000 if "16x" in stem else 6000)
        assert method.tau == (1e-4 if "16x" in stem else 4.0 if "tau4" in stem else 1e-2)
        assert method.reweight == ("ld_only" not in stem) and method.local == ("rl_only" not in stem)
        assert method.ld_loss == ("l2_norm" if "ld_only" in stem else "mean_square")
        assert method.teacher_adapter == ("frozen_random" if "frozen_tadapter" in stem else "trainable")
        expected_student = {"l8": [2, 3, 3], "l5": [1, 2, 2], "l3": [1, 1, 1]}.get(stem.split("_")[1], [3, 5, 5])
        assert cfg.MODEL.BACKBONE_2D.LAYER_NUMS == expected_student


def test_teacher_cfg_file_is_relative_to_the_kd_config(tmp_path, monkeypatch):
    folder = tmp_path / "exp"
    folder.mkdir()
    models = REPO_ROOT / "tools" / "cfgs" / "kitti_models"
    kd_file = folder / "kd.yaml"
    kd_file.write_text(yaml.safe_dump({
        "_BASE_CONFIG_": os.path.relpath(models / "pointpillar_16x.yaml", folder),
        "KD": {"TEACHER": {"CFG_FILE": os.path.relpath(models / "pointpillar.yaml", folder), "CKPT": "t.pth",
                           "MODEL": {"VFE": {"WITH_DISTANCE": True}}},
               "METHODS": [{"NAME": "FeatureKD", "FEATURE": "pillar_features"}]},
    }))
    monkeypatch.chdir(REPO_ROOT / "tools")  # anywhere else
    cfg = load_experiment_cfg(str(kd_file), ["KD.TEACHER.MODEL.BACKBONE_2D.LAYER_NUMS", "[1, 1, 1]"])
    t = cfg.KD.TEACHER
    assert t.MODEL.VFE.NUM_FILTERS == [64] and t.MODEL.VFE.WITH_DISTANCE is True  # loaded, then overridden
    assert t.MODEL.BACKBONE_2D.LAYER_NUMS == [1, 1, 1]  # --set applies to the resolved teacher
    assert t.CKPT == "t.pth" and t.CLASS_NAMES == cfg.CLASS_NAMES and cfg.MODEL.VFE.NUM_FILTERS == [16]
    kd_file.write_text(yaml.safe_dump({"_BASE_CONFIG_": os.path.relpath(models / "pointpillar_16x.yaml", folder),
                                       "KD": {"TEACHER": {"CFG_FILE": "missing.yaml"}, "METHODS": []}}))
    with pytest.raises(ConfigError, match="CFG_FILE"):
        load_experiment_cfg(str(kd_file))


def _kd_cfg(extra=()):
    rng = str(SMALL_RANGE)
    return load_experiment_cfg(REPO_ROOT / "kd_cfgs" / "kitti" / "pointpillar_16x_pointdistiller.yaml",
                               ["DATA_CONFIG.POINT_CLOUD_RANGE", rng, "KD.TEACHER.DATA_CONFIG.POINT_CLOUD_RANGE", rng, *extra])


def test_differently_voxelising_teacher_gets_its_own_voxeliser():
    cfg = _kd_cfg()
    assert voxeliser_of(cfg.DATA_CONFIG, "_tea") is None
    voxeliser_of(cfg.KD.TEACHER.DATA_CONFIG).VOXEL_SIZE = [0.32, 0.32, 4]
    finalize_kd_cfg(cfg)
    step = voxeliser_of(cfg.DATA_CONFIG, "_tea")
    assert step is not None and step.VOXEL_SIZE == [0.32, 0.32, 4] and step.MAX_POINTS_PER_VOXEL == 32
    assert voxeliser_of(cfg.DATA_CONFIG).VOXEL_SIZE == [0.16, 0.16, 4]
    n_steps = len(cfg.DATA_CONFIG.DATA_PROCESSOR)
    finalize_kd_cfg(cfg)  # idempotent
    assert len(cfg.DATA_CONFIG.DATA_PROCESSOR) == n_steps
    # a different voxel budget alone also needs the teacher's own voxels
    cfg2 = _kd_cfg()
    voxeliser_of(cfg2.KD.TEACHER.DATA_CONFIG).MAX_NUMBER_OF_VOXELS = {"train": 100, "test": 200}
    assert voxeliser_of(finalize_kd_cfg(cfg2).DATA_CONFIG, "_tea").MAX_NUMBER_OF_VOXELS == {"train": 100, "test": 200}
    # another point cloud range cannot be served from the student's cropped points
    cfg3 = _kd_cfg()
    cfg3.KD.TEACHER.DATA_CONFIG.POINT_CLOUD_RANGE = [0, -10.24, -3, 10.24, 10.24, 1]
    with pytest.raises(ConfigError, match="POINT_CLOUD_RANGE"):
        finalize_kd_cfg(cfg3)


class _TinySet(DatasetTemplate):
    """Labelled random clouds through the configured processor (no files)."""

    def __init__(self, cfg):
        data_cfg = cfg.DATA_CONFIG
        data_cfg.DATA_AUGMENTOR = None
        super().__init__(dataset_cfg=data_cfg, class_names=cfg.CLASS_NAMES, training=True, root_path=".")

    def sample(self, seed):
        rng = np.random.default_rng(seed)
        lo, hi = np.array(SMALL_RANGE[:3]), np.array(SMALL_RANGE[3:])
        pts = np.concatenate([rng.uniform(lo, hi, (3000, 3)), rng.uniform(0, 1, (3000, 1))], 1).astype(np.float32)
        boxes = np.array([[4.0, 1.0, -1.0, 3.9, 1.6, 1.56, 0.3]], dtype=np.float32)
        return self.prepare_data({"points": pts, "frame_id": str(seed), "gt_boxes": boxes, "gt_names": np.array(["Car"])})


def test_teacher_reads_its_own_voxels_and_missing_ones_are_an_error(tmp_path):
    cfg = _kd_cfg(["KD.METHODS", "[{NAME: FeatureKD, FEATURE: spatial_features_4x, TEACHER_FEATURE: spatial_features_2x}]"])
    voxeliser_of(cfg.KD.TEACHER.DATA_CONFIG).VOXEL_SIZE = [0.32, 0.32, 4]
    finalize_kd_cfg(cfg)
    data = _TinySet(cfg)
    assert set(data.data_processor.voxel_settings) == {"", "_tea"}  # one teacher suffix for inputs and outputs
    assert data.data_processor.keys_with_suffix["_tea"] == ["voxels", "voxel_coords", "voxel_num_points"]
    batch = data.collate_batch([data.sample(0), data.sample(1)])
    assert batch["voxels_tea"].shape[0] < batch["voxels"].shape[0]  # coarser pillars
    load_data_to_device(batch, torch.device("cpu"))
    torch.manual_seed(0)
    teacher = build_network(cfg.KD.TEACHER.MODEL, 3, _dataset_view(cfg))
    torch.save({"model_state": {k: v for k, v in teacher.state_dict().items()}}, tmp_path / "t.pth")
    cfg.KD.TEACHER.CKPT = str(tmp_path / "t.pth")
    model = build_network(cfg.MODEL, 3, data, kd_cfg=cfg.KD)
    assert model.teacher_suffix == "_tea"
    assert model.teacher.map_to_bev_module.nx == 32 and model.student.map_to_bev_module.nx == 64  # 10.24 m / 0.32, 0.16
    model.train()
    ret, tb, _ = model(dict(batch))
    assert torch.isfinite(ret["loss"]) and tb["kd_featurekd_spatial_features_4x"] > 0
    b = dict(batch)
    model(b)
    assert b["pillar_features_tea"].shape[0] == batch["voxels_tea"].shape[0]
    assert b["pillar_features"].shape[0] == batch["voxels"].shape[0]
    assert torch.equal(b["voxel_coords_tea"], batch["voxel_coords_tea"])
    missing = {k: v for k, v in batch.items() if k not in ("voxels_tea", "voxel_coords_tea", "voxel_num_points_tea")}
    with pytest.raises(TeacherInputError, match="voxels_tea"):
        model(missing)


SYNTHETIC_KD = sorted((REPO_ROOT / "kd_cfgs" / "synthetic").glob("pointpillar_*.yaml"))


def test_every_kitti_kd_experiment_has_a_synthetic_counterpart():
    assert {p.stem for p in SYNTHETIC_KD} == {p.stem for p in KITTI_KD}


@pytest.mark.parametrize("path", SYNTHETIC_KD, ids=lambda p: p.stem)
def test_synthetic_kd_config_mirrors_kitti_one(path, tmp_path, monkeypatch):
    cfg, kitti = load_synthetic_and_kitti_twin(path, tmp_path, monkeypatch)
    assert cfg.MODEL.VFE == kitti.MODEL.VFE and cfg.MODEL.BACKBONE_2D == kitti.MODEL.BACKBONE_2D
    assert cfg.KD.TEACHER.MODEL.BACKBONE_2D == kitti.KD.TEACHER.MODEL.BACKBONE_2D
    ours, theirs = cfg.KD.METHODS[0], kitti.KD.METHODS[0]
    for key in ("NAME", "FEATURE", "LOCAL_DISTILLATION", "REWEIGHT", "TAU"):
        assert ours.get(key) == theirs.get(key), key
