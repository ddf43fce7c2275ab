"""Every KD baseline trains 20 steps on the embedded dataset: finite losses, a KD gradient that reaches
the student, and a student that changes; the teacher never changes.

The teacher is an untrained PointPillars whose class bias makes it confident on the Car anchors, so
that the box-based methods (SE-SSD consistency, SparseKD label KD) exercise their matching paths.
"""
import pytest
import torch

from pcdet.datasets import build_dataloader
from pcdet.datasets.kitti.kitti_dataset import create_kitti_infos
from pcdet.datasets.synthetic.build import generate_dataset
from pcdet.models import build_network, load_data_to_device
from pcdet.models.detectors import build_detector
from pcdet.train_utils.experiment import load_experiment_cfg
from pcdet.train_utils.optimization import build_optimizer
from pcdet.utils.paths import REPO_ROOT

RANGE = "[0, -12.8, -3, 25.6, 12.8, 1]"
BASELINES = ["hinton", "fitnet", "attention_transfer", "similarity_preserving", "crd", "overhaul", "zhang_ma",
             "sessd", "multiframe", "sparsekd", "pvd_det", "paint_and_distill"]
#: per method, a tb key that must be positive at least once (the method's non-trivial path ran)
ACTIVE = {"sessd": "kd_sessdconsistency/pairs", "sparsekd": "kd_sparsekd/label_kd_boxes",
          "crd": "kd_crd_spatial_features_2d/instances", "pvd_det": "kd_pvddet/supervoxels"}

pytestmark = pytest.mark.usefixtures("single_thread")


def _cfg(suffix, data=None, ckpt=None):
    extra = ["DATA_CONFIG.POINT_CLOUD_RANGE", RANGE, "KD.TEACHER.DATA_CONFIG.POINT_CLOUD_RANGE", RANGE]
    if data is not None:
        extra += ["DATA_CONFIG.DATA_PATH", str(data)]
    if ckpt is not None:
        extra += ["KD.TEACHER.CKPT", str(ckpt)]
    return load_experiment_cfg(REPO_ROOT / "kd_cfgs" / "synthetic" / f"pointpillar_4x_{suffix}.yaml", extra)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("syn_kd")
    generate_dataset(root, frames=6, seed=7, val_fraction=0.34)
    cfg = _cfg("hinton", data=root)
    create_kitti_infos(cfg.DATA_CONFIG, cfg.CLASS_NAMES, root, workers=0)
    ds, _, _ = build_dataloader(cfg.DATA_CONFIG, cfg.CLASS_NAMES, 2, False, workers=0, seed=0, training=True)
    torch.manual_seed(11)
    teacher = build_detector(model_cfg=cfg.KD.TEACHER.MODEL, num_class=3, dataset=ds)
    with torch.no_grad():  # confident on Car (class 0 of every anchor), not on the others
        bias = teacher.dense_head.conv_cls.bias.view(-1, 3)
        bias[:, 0] = 2.0
        bias[:, 1:] = -4.0
    ckpt = root / "teacher.pth"
    torch.save({"model_state": teacher.state_dict()}, ckpt)
    return root, ckpt


@pytest.mark.parametrize("suffix", BASELINES)
def test_twenty_steps_without_nan_change_the_student(setup, suffix):
    root, ckpt = setup
    cfg = _cfg(suffix, data=root, ckpt=ckpt)
    ds, loader, _ = build_dataloader(cfg.DATA_CONFIG, cfg.CLASS_NAMES, 2, False, workers=0, seed=0, training=True)
    torch.manual_seed(0)
    model = build_network(cfg.MODEL, 3, ds, kd_cfg=cfg.KD)
    model.train()
    opt = build_optimizer(model, cfg.OPTIMIZATION)
    student_before = {k: v.clone() for k, v in model.student.state_dict().items()}
    teacher_before = {k: v.clone() for k, v in model.teacher.state_dict().items()}
    student_params = [p for p in model.student.parameters() if p.requires_grad]
    kd_values, active, step = [], 0, 0
    while step < 20:
        for batch in loader:
            batch = load_data_to_device(batch, torch.device("cpu"))
            ret, tb, _ = model(batch)
            assert torch.isfinite(ret["loss"]), (suffix, step, tb)
            kd_values.append(tb["loss_kd"])
            active += tb.get(ACTIVE.get(suffix, "loss_kd"), 0) > 0
            if step == 0:  # the KD term alone moves the student
                kd_loss, _ = model.kd_methods[0](batch)
                grads = torch.autograd.grad(kd_loss, student_params, retain_graph=True, allow_unused=True)
                assert any(g is not None and float(g.abs().sum()) > 0 for g in grads), suffix
            opt.zero_grad(set_to_none=True)
            ret["loss"].backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
            opt.step()
            step += 1
            if step == 20:
                break
    assert all(v == v for v in kd_values) and max(kd_values) > 0, (suffix, kd_values)
    assert active > 0, f"{suffix}: {ACTIVE.get(suffix)} never positive"
    after = model.student.state_dict()
    assert any(not torch.equal(student_before[k], after[k]) for k in student_before if after[k].is_floating_point())
    for k, v in model.teacher.state_dict().items():
        assert torch.equal(teacher_before[k], v), k
