"""DistillationWrapper: frozen teacher, gradients, teacher runs once, checkpoints and exports."""
import pytest
import torch

from pcdet.kd.wrapper import DistillationWrapper, TeacherCheckpointError
from pcdet.models import build_network
from pcdet.models.detectors import build_detector
from pcdet.models.detectors.detector3d_template import CheckpointMismatchError
from pcdet.train_utils.experiment import load_experiment_cfg
from pcdet.train_utils.optimization import build_optimizer
from pcdet.utils.paths import REPO_ROOT
from tests.helpers import fake_dataset, random_batch

KD_CFG = REPO_ROOT / "kd_cfgs" / "kitti" / "pointpillar_16x_pointdistiller.yaml"
SMALL_RANGE = "[0, -5.12, -3, 10.24, 5.12, 1]"
METHODS = ("[{NAME: PointDistiller, WEIGHT: 2.0, FEATURE: pillar_features, N: 120, K: 16, TAU: 0.5}, "
           "{NAME: FeatureKD, WEIGHT: 1.0, FEATURE: spatial_features_2x}]")


pytestmark = pytest.mark.usefixtures("single_thread")


def small_kd_cfg(extra=()):
    return load_experiment_cfg(KD_CFG, ["DATA_CONFIG.POINT_CLOUD_RANGE", SMALL_RANGE,
                                        "KD.TEACHER.DATA_CONFIG.POINT_CLOUD_RANGE", SMALL_RANGE,
                                        "KD.METHODS", METHODS, *extra])


def save_teacher_ckpt(cfg, path, model_cfg=None, seed=1):
    torch.manual_seed(seed)
    teacher = build_detector(model_cfg=model_cfg or cfg.KD.TEACHER.MODEL, num_class=3, dataset=fake_dataset(cfg))
    with torch.no_grad():  # non-default BatchNorm statistics, so that "unchanged" means something
        for m in teacher.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    torch.save({"model_state": teacher.state_dict()}, path)
    return teacher


@pytest.fixture
def kd(tmp_path):
    cfg = small_kd_cfg()
    save_teacher_ckpt(cfg, tmp_path / "teacher.pth")
    cfg.KD.TEACHER.CKPT = str(tmp_path / "teacher.pth")
    ds = fake_dataset(cfg)
    torch.manual_seed(0)
    model = build_network(cfg.MODEL, 3, ds, kd_cfg=cfg.KD)
    return cfg, ds, model


def test_build_network_returns_the_wrapper_with_teacher_outside_the_module_tree(kd):
    cfg, ds, model = kd
    assert isinstance(model, DistillationWrapper)
    keys = list(model.state_dict())
    assert keys and all(k.startswith(("student.", "kd_methods.")) for k in keys)
    assert any(k.startswith("kd_methods.0.adapter_t.") for k in keys)
    teacher_ids = {id(p) for p in model.teacher.parameters()}
    assert not teacher_ids & {id(p) for p in model.parameters()}
    assert not any(m is model.teacher for m in model.modules())
    model.train()
    assert not model.teacher.training and all(not m.training for m in model.teacher.modules())
    assert all(not p.requires_grad for p in model.teacher.parameters())
    model.double()  # moved with the wrapper (the _apply override)
    assert all(p.dtype == torch.float64 for p in model.teacher.parameters())
    assert all(not p.requires_grad for p in model.teacher.parameters())


def test_training_keeps_teacher_bit_identical_and_trains_student_and_adapters(kd):
    cfg, ds, model = kd
    teacher = model.teacher
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    calls = []
    teacher.vfe.register_forward_pre_hook(lambda m, inp: calls.append(1))
    optimizer = build_optimizer(model, cfg.OPTIMIZATION)
    opt_ids = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert not opt_ids & {id(p) for p in teacher.parameters()}
    adapter_params = list(model.kd_methods.parameters())
    adapter_before = [p.detach().clone() for p in adapter_params]
    model.train()
    for step in range(3):
        batch = random_batch(ds.data_processor.grid_size, seed=step)
        optimizer.zero_grad(set_to_none=True)
        ret, tb, _ = model(batch)
        assert torch.isfinite(ret["loss"])
        assert {"loss_task", "loss_kd", "kd_pointdistiller_pillar_features", "kd_featurekd_spatial_features_2x"} <= set(tb)
        assert abs(tb["loss_task"] + tb["loss_kd"] - ret["loss"].item()) < 1e-4 * abs(ret["loss"].item()) + 1e-6
        ret["loss"].backward()
        # gradients reach the student and both adapters of every method, never the teacher
        for name, p in model.named_parameters():
            assert p.grad is not None, name
        assert all(p.grad.abs().sum() > 0 for p in model.kd_methods[0].adapter_t.parameters())
        assert all(p.grad.abs().sum() > 0 for p in model.kd_methods[0].adapter_s.parameters())
        assert model.student.vfe.pfn_layers[0].linear.weight.grad.abs().sum() > 0
        assert all(p.grad is None for p in teacher.parameters())
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        optimizer.step()
        assert len(calls) == step + 1 and model.teacher_calls == step + 1  # once per batch
    after = teacher.state_dict()
    assert before.keys() == after.keys()
    for k in before:
        assert torch.equal(before[k], after[k]), k
    assert any(not torch.equal(a, p) for a, p in zip(adapter_before, adapter_params))


def test_teacher_outputs_recorded_without_touching_student_keys(kd):
    cfg, ds, model = kd
    model.train()
    batch = random_batch(ds.data_processor.grid_size)
    model(batch)
    for key in ("pillar_features", "voxel_num_points", "voxel_coords", "spatial_features", "spatial_features_2d",
                "spatial_features_2x", "spatial_features_4x", "spatial_features_8x", "cls_preds", "box_preds",
                "dir_cls_preds", "batch_cls_preds", "batch_box_preds"):
        assert key + "_tea" in batch, key
    assert batch["pillar_features"].shape[1] == 16 and batch["pillar_features_tea"].shape[1] == 64
    assert batch["spatial_features_2d"].shape[1] == 96 and batch["spatial_features_2d_tea"].shape[1] == 384
    assert batch["pillar_features"].requires_grad and not batch["pillar_features_tea"].requires_grad
    assert "batch_cls_preds" not in batch  # the student does not predict boxes in training


def test_eval_is_the_student_and_export_loads_into_a_plain_student(kd, tmp_path):
    cfg, ds, model = kd
    model.train()
    model(random_batch(ds.data_processor.grid_size))  # moves BatchNorm statistics of the student
    exported = model.export_state_dict()
    assert set(exported) == set(model.student.state_dict())
    assert not any("adapter" in k or k.startswith(("kd_methods", "teacher", "student.")) for k in exported)
    path = tmp_path / "student_epoch_1.pth"
    torch.save({"model_state": exported, "epoch": 0}, path)
    student_cfg = load_experiment_cfg(REPO_ROOT / "tools" / "cfgs" / "kitti_models" / "pointpillar_16x.yaml",
                                      ["DATA_CONFIG.POINT_CLOUD_RANGE", SMALL_RANGE])
    plain = build_network(student_cfg.MODEL, 3, fake_dataset(student_cfg, training=False))
    plain.load_params_from_file(str(path))
    plain.eval()
    model.eval()
    batch = random_batch(ds.data_processor.grid_size, seed=5)
    with torch.no_grad():
        preds_w, recall_w = model(dict(batch))
        preds_p, recall_p = plain(dict(batch))
    assert model.teacher_calls == 1  # evaluation does not run the teacher
    assert recall_w == recall_p and len(preds_w) == len(preds_p) == 2
    for a, b in zip(preds_w, preds_p):
        for key in ("pred_boxes", "pred_scores", "pred_labels"):
            assert torch.equal(a[key], b[key])


def test_training_checkpoint_round_trip(kd, tmp_path):
    cfg, ds, model = kd
    path = tmp_path / "checkpoint_epoch_1.pth"
    torch.save({"model_state": model.state_dict()}, path)
    torch.manual_seed(123)
    other = build_network(cfg.MODEL, 3, ds, kd_cfg=cfg.KD)
    other.load_params_from_file(str(path))
    for k, v in model.state_dict().items():
        assert torch.equal(v, other.state_dict()[k])


def test_load_student_weights_takes_the_student_out_of_a_kd_training_checkpoint(kd, tmp_path):
    """What tools/test.py does with a KD config: a bare student, weights from the wrapper checkpoint
    (``student.*``; the ``kd_methods.*`` adapters left out) or from the exported student; a
    checkpoint of another student config is refused, naming the key and both shapes."""
    from pcdet.kd.wrapper import load_student_weights, student_state_dict

    cfg, ds, model = kd
    model.train()
    model(random_batch(ds.data_processor.grid_size))
    wrapper_ckpt = tmp_path / "checkpoint_epoch_1.pth"
    torch.save({"model_state": model.state_dict(), "epoch": 0}, wrapper_ckpt)
    assert any(k.startswith("kd_methods.") for k in model.state_dict())
    assert student_state_dict(model.state_dict()).keys() == model.student.state_dict().keys()
    for path in (wrapper_ckpt, tmp_path / "student_epoch_1.pth"):
        if path.name.startswith("student"):
            torch.save({"model_state": model.export_state_dict()}, path)
        bare = build_network(cfg.MODEL, 3, fake_dataset(cfg, training=False))
        load_student_weights(bare, str(path))
        for k, v in model.student.state_dict().items():
            assert torch.equal(v, bare.state_dict()[k]), (path.name, k)
    other = load_experiment_cfg(REPO_ROOT / "tools" / "cfgs" / "kitti_models" / "pointpillar_4x.yaml",
                                ["DATA_CONFIG.POINT_CLOUD_RANGE", SMALL_RANGE])
    wrong = build_network(other.MODEL, 3, fake_dataset(other, training=False))
    with pytest.raises(CheckpointMismatchError, match=r"student\.\* tensors.*shape mismatch at 'vfe"):
        load_student_weights(wrong, str(wrapper_ckpt))


def test_teacher_checkpoint_of_another_config_names_key_and_shapes(tmp_path):
    cfg = small_kd_cfg()
    wrong = load_experiment_cfg(REPO_ROOT / "tools" / "cfgs" / "kitti_models" / "pointpillar_4x.yaml")
    save_teacher_ckpt(cfg, tmp_path / "wrong.pth", model_cfg=wrong.MODEL)
    cfg.KD.TEACHER.CKPT = str(tmp_path / "wrong.pth")
    with pytest.raises(CheckpointMismatchError) as err:
        build_network(cfg.MODEL, 3, fake_dataset(cfg), kd_cfg=cfg.KD)
    msg = str(err.value)
    assert "vfe.pfn_layers.0.linear.weight" in msg and "(32, 10)" in msg and "(64, 10)" in msg


def test_missing_teacher_checkpoint_is_a_clear_error_in_training():
    cfg = small_kd_cfg()
    assert cfg.KD.TEACHER.CKPT is None
    with pytest.raises(TeacherCheckpointError, match=r"KD\.TEACHER\.CKPT.*--teacher_ckpt"):
        build_network(cfg.MODEL, 3, fake_dataset(cfg, training=True), kd_cfg=cfg.KD)
    # evaluation-only builds are allowed, but such a wrapper refuses to train
    model = build_network(cfg.MODEL, 3, fake_dataset(cfg, training=False), kd_cfg=cfg.KD)
    model.train()
    with pytest.raises(TeacherCheckpointError, match="--teacher_ckpt"):
        model(random_batch(fake_dataset(cfg).data_processor.grid_size))


def test_the_training_loop_trains_the_wrapper_and_exports_the_student(kd, tmp_path):
    from pcdet.train_utils.optimization import build_scheduler
    from pcdet.train_utils.train_utils import load_checkpoint_for_resume, train_model

    cfg, ds, model = kd
    loader = [random_batch(ds.data_processor.grid_size, seed=s) for s in range(2)]
    optimizer = build_optimizer(model, cfg.OPTIMIZATION)
    scheduler = build_scheduler(optimizer, len(loader), 1, cfg.OPTIMIZATION)
    teacher_before = {k: v.clone() for k, v in model.teacher.state_dict().items()}
    train_model(model, optimizer, loader, scheduler, 0, 1, 0, tmp_path, seed=0, device=torch.device("cpu"),
                grad_norm_clip=10.0, progress=False)
    assert model.teacher_calls == 2
    assert all(torch.equal(v, model.teacher.state_dict()[k]) for k, v in teacher_before.items())
    ckpt = torch.load(tmp_path / "checkpoint_epoch_1.pth", weights_only=False)
    assert any(k.startswith("kd_methods.") for k in ckpt["model_state"])
    student_cfg = load_experiment_cfg(REPO_ROOT / "tools" / "cfgs" / "kitti_models" / "pointpillar_16x.yaml",
                                      ["DATA_CONFIG.POINT_CLOUD_RANGE", SMALL_RANGE])
    plain = build_network(student_cfg.MODEL, 3, fake_dataset(student_cfg, training=False))
    plain.load_params_from_file(str(tmp_path / "student_epoch_1.pth"))  # strict: student keys only
    for k, v in plain.state_dict().items():
        assert torch.equal(v, model.student.state_dict()[k])
    # resuming a KD run: the wrapper checkpoint restores student + adapters; the teacher comes from its CKPT
    resumed = build_network(cfg.MODEL, 3, ds, kd_cfg=cfg.KD)
    opt2 = build_optimizer(resumed, cfg.OPTIMIZATION)
    epoch, _ = load_checkpoint_for_resume(tmp_path / "checkpoint_epoch_1.pth", resumed, opt2,
                                          build_scheduler(opt2, len(loader), 1, cfg.OPTIMIZATION))
    assert epoch == 1
    for k, v in model.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k])
    assert all(torch.equal(v, resumed.teacher.state_dict()[k]) for k, v in teacher_before.items())


def test_kd_losses_run_in_float32_under_a_bf16_autocast_forward(kd, monkeypatch):
    """Mixed-precision training (OPTIMIZATION.MIXED_PRECISION: bf16): the student's features are
    bf16, the KD methods still see float32 (the fused CPU edge kernels take float32/64 only)."""
    import pcdet.kd.graph_ops as graph_ops

    cfg, ds, model = kd
    seen = []
    orig = graph_ops.FusedEdgeBNReluLoss.apply
    monkeypatch.setattr(graph_ops.FusedEdgeBNReluLoss, "apply",
                        staticmethod(lambda *a: seen.append(a[0].dtype) or orig(*a)))
    model.train()
    batch = random_batch(ds.data_processor.grid_size, seed=3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ret, tb, _ = model(batch)
    assert batch["pillar_features"].dtype == torch.bfloat16  # the student did run in bf16
    assert seen == [torch.float32]  # PointDistiller's fused float32 CPU path
    assert torch.isfinite(ret["loss"]) and tb["kd_pointdistiller_pillar_features"] > 0
    ret["loss"].backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.kd_methods.parameters())


def test_kd_scale_multiplies_the_kd_losses_only(kd):
    """What the kd_weight_warmup hook sets: the sum of the KD losses scaled, the task loss untouched."""
    cfg, ds, model = kd
    model.train()
    batch = random_batch(ds.data_processor.grid_size, seed=3)
    torch.manual_seed(0)
    _, full, _ = model(dict(batch))
    model.kd_scale = 0.25
    torch.manual_seed(0)
    ret, scaled, _ = model(dict(batch))
    assert scaled["kd_scale"] == 0.25 and "kd_scale" not in full
    assert scaled["loss_task"] == pytest.approx(full["loss_task"], rel=1e-6)
    assert scaled["loss_kd"] == pytest.approx(0.25 * full["loss_kd"], rel=1e-4)
    assert ret["loss"].item() == pytest.approx(scaled["loss_task"] + scaled["loss_kd"], rel=1e-5)
