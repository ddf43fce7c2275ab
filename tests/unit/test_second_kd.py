"""SECOND KD experiments (kd_cfgs/{kitti,synthetic}/second_*): every config builds with its teacher and
trains one step on a small range, the gradient reaching the student and every method's own parameters
(the adapters) but never the teacher; PointDistiller's SECOND settings (two BEV levels, the release's
N / K / tau and 32-channel adapters); every KITTI SECOND experiment has an embedded counterpart with
the same methods; sparse encoders run in fp32 under bf16 autocast."""

import pytest
import torch

from pcdet.config import ConfigError
from pcdet.kd.wrapper import DistillationWrapper
from pcdet.models import build_network
from pcdet.models.detectors import build_detector
from pcdet.train_utils.experiment import load_experiment_cfg
from pcdet.utils.paths import REPO_ROOT
from tests.helpers import fake_dataset, load_synthetic_and_kitti_twin, voxel_batch

KITTI_SECOND_KD = sorted((REPO_ROOT / "kd_cfgs" / "kitti").glob("second_*.yaml"))
SYNTHETIC_SECOND_KD = sorted((REPO_ROOT / "kd_cfgs" / "synthetic").glob("second_*.yaml"))
SMALL_RANGE = "[0, -3.2, -3, 6.4, 3.2, 1]"
#: the baselines that apply to an anchor head and BEV maps (PVDDet reads pillars: PointPillars only)
SECOND_BASELINES = {"hinton", "fitnet", "attention_transfer", "similarity_preserving", "crd", "overhaul", "zhang_ma",
                    "sessd", "multiframe", "sparsekd", "paint_and_distill"}

pytestmark = pytest.mark.usefixtures("single_thread")


def small_kd_cfg(path):
    return load_experiment_cfg(path, ["DATA_CONFIG.POINT_CLOUD_RANGE", SMALL_RANGE,
                                      "KD.TEACHER.DATA_CONFIG.POINT_CLOUD_RANGE", SMALL_RANGE])


@pytest.fixture(scope="module")
def teacher_ckpt(tmp_path_factory):
    """A randomly initialised SECOND teacher on the small range (every SECOND KD config names the same one)."""
    cfg = small_kd_cfg(REPO_ROOT / "kd_cfgs" / "kitti" / "second_4x_pointdistiller.yaml")
    ds = fake_dataset(cfg, voxel=tuple(cfg.DATA_CONFIG.DATA_PROCESSOR[-1].VOXEL_SIZE))
    torch.manual_seed(1)
    teacher = build_detector(model_cfg=cfg.KD.TEACHER.MODEL, num_class=3, dataset=ds)
    path = tmp_path_factory.mktemp("teacher") / "second.pth"
    torch.save({"model_state": teacher.state_dict()}, path)
    return path


def build_kd(cfg, ckpt):
    cfg.KD.TEACHER.CKPT = str(ckpt)
    vs = cfg.DATA_CONFIG.DATA_PROCESSOR[-1].VOXEL_SIZE
    ds = fake_dataset(cfg, voxel=tuple(vs))
    torch.manual_seed(0)
    return build_network(cfg.MODEL, 3, ds, kd_cfg=cfg.KD), ds


def test_second_kd_experiments_exist_in_both_families():
    kitti = {p.stem for p in KITTI_SECOND_KD}
    assert {"second_4x_pointdistiller", "second_16x_pointdistiller", "second_4x_featurekd"} <= kitti
    assert {f"second_4x_{k}" for k in SECOND_BASELINES} <= kitti
    assert {p.stem for p in SYNTHETIC_SECOND_KD} == kitti


@pytest.mark.parametrize("path", KITTI_SECOND_KD, ids=lambda p: p.stem)
def test_second_kd_step_trains_student_and_adapters_never_the_teacher(path, teacher_ckpt):
    cfg = small_kd_cfg(path)
    assert cfg.KD.TEACHER.MODEL.NAME == "SECONDNet" and cfg.KD.TEACHER.MODEL.BACKBONE_3D.WIDTHS == [16, 16, 32, 64, 64]
    assert cfg.KD.TEACHER.DATA_CONFIG == cfg.DATA_CONFIG  # same voxels: no second voxeliser
    model, ds = build_kd(cfg, teacher_ckpt)
    assert isinstance(model, DistillationWrapper)
    model.train()
    batch = voxel_batch(ds.data_processor.grid_size)
    ret, tb, _ = model(batch)
    assert torch.isfinite(ret["loss"])
    ret["loss"].backward()
    assert all(p.grad is None for p in model.teacher.parameters())
    assert not any(p.requires_grad for p in model.teacher.parameters())
    student = model.student
    assert student.backbone_3d.conv_input[0].weight.grad.abs().sum() > 0  # the sparse encoder learns
    assert student.dense_head.conv_cls.weight.grad.abs().sum() > 0
    for method in model.kd_methods:
        trainable = [p for p in method.parameters() if p.requires_grad]
        for p in trainable:
            assert p.grad is not None and torch.isfinite(p.grad).all(), type(method).__name__
        assert any(p.grad.abs().sum() > 0 for p in trainable) or not trainable, type(method).__name__


@pytest.mark.parametrize("ratio,k,student_c", [("4x", 256, (64, 128)), ("16x", 128, (32, 64))])
def test_pointdistiller_on_second_distils_both_bev_levels(ratio, k, student_c, teacher_ckpt):
    cfg = small_kd_cfg(REPO_ROOT / "kd_cfgs" / "kitti" / f"second_{ratio}_pointdistiller.yaml")
    model, ds = build_kd(cfg, teacher_ckpt)
    pd = model.kd_methods
    assert [m.feature for m in pd] == ["spatial_features_1x", "spatial_features_2x"]
    for m, c_s, c_t in zip(pd, student_c, (128, 256)):
        assert (m.n, m.k, m.tau, m.importance, m.local, m.reweight) == (256, k, 1e-4, "channel_max", True, True)
        assert (m.c_s, m.c_t) == (c_s, c_t)
        assert m.adapter_t.conv.weight.shape == (32, 2 * c_t, 1) and m.adapter_s.conv.weight.shape == (32, 2 * c_s, 1)
    model.train()
    ret, tb, _ = model(voxel_batch(ds.data_processor.grid_size))
    ret["loss"].backward()
    for m in pd:  # both adapters of both levels receive gradient
        assert m.adapter_t.conv.weight.grad.abs().sum() > 0 and m.adapter_s.conv.weight.grad.abs().sum() > 0


def test_adapter_channels_needs_local_distillation(teacher_ckpt):
    cfg = small_kd_cfg(REPO_ROOT / "kd_cfgs" / "kitti" / "second_4x_pointdistiller.yaml")
    cfg.KD.METHODS[0].LOCAL_DISTILLATION = False
    with pytest.raises(ConfigError, match="ADAPTER_CHANNELS"):
        build_kd(cfg, teacher_ckpt)


@pytest.mark.parametrize("path", SYNTHETIC_SECOND_KD, ids=lambda p: p.stem)
def test_synthetic_second_kd_mirrors_kitti(path, tmp_path, monkeypatch):
    cfg, kitti = load_synthetic_and_kitti_twin(path, tmp_path, monkeypatch)
    assert cfg.DATA_CONFIG.DATA_PROCESSOR[-1].VOXEL_SIZE == [0.1, 0.1, 0.1]
    for key in ("VFE", "BACKBONE_3D", "MAP_TO_BEV", "BACKBONE_2D"):
        assert cfg.MODEL[key] == kitti.MODEL[key] and cfg.KD.TEACHER.MODEL[key] == kitti.KD.TEACHER.MODEL[key], key
    assert cfg.KD.METHODS == kitti.KD.METHODS


def test_sparse_encoder_runs_in_fp32_under_bf16_autocast(teacher_ckpt):
    """spconv has no bf16 kernels: under CPU bf16 autocast the step used to fail with KeyError
    torch.bfloat16; the encoder now runs in fp32 and the dense layers after it in bf16."""
    cfg = small_kd_cfg(REPO_ROOT / "kd_cfgs" / "kitti" / "second_16x_pointdistiller.yaml")
    model, ds = build_kd(cfg, teacher_ckpt)
    model.train()
    batch = voxel_batch(ds.data_processor.grid_size)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ret, _, _ = model(batch)
    ret["loss"].backward()
    assert batch["encoded_spconv_tensor"].features.dtype == torch.float32
    assert batch["spatial_features_2d"].dtype == torch.bfloat16
    assert model.student.backbone_3d.conv_input[0].weight.grad.abs().sum() > 0
