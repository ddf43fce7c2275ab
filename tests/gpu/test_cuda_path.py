"""The CUDA path (``pytest -m gpu``; skipped with a reason on machines without CUDA): the detectors and
the segmentor, the KD wrapper and every KD method of the KITTI and embedded segmentation experiments
give on CUDA what they give on the CPU for the same weights and inputs. TF32 is switched off, so both devices compute in fp32; the
tolerance is relative to each output's largest magnitude: 1e-4 for forwards (different summation
orders), 1e-3 for losses (sums over many terms, sorting / top-k ties resolved alike)."""
import copy

import pytest
import torch

from pcdet.models import build_network
from pcdet.train_utils.experiment import load_experiment_cfg
from pcdet.utils.paths import REPO_ROOT
from tests.helpers import fake_dataset, random_batch, voxel_batch

pytestmark = pytest.mark.gpu
KITTI = REPO_ROOT / "tools" / "cfgs" / "kitti_models"
SMALL = "[0, -6.4, -3, 12.8, 6.4, 1]"
KD_CFGS = sorted((REPO_ROOT / "kd_cfgs" / "kitti").glob("*.yaml"))
#: methods that draw random samples on the device (CRD's negatives, PVDDet's supervoxels): the CUDA and CPU
#: generators differ, so their losses are compared for being finite only
RANDOM_DRAWS = ("_crd", "_pvd_det")
CUDA = torch.device("cuda")


@pytest.fixture(autouse=True)
def no_tf32():
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def _to(batch, device):
    return {k: (v.to(device) if torch.is_tensor(v) else copy.deepcopy(v)) for k, v in batch.items()}


def _batch(name, grid):
    if name.startswith("second"):
        return voxel_batch(grid)
    return random_batch(grid)


def _close(a, b, rel):
    a, b = a.detach().float().cpu(), b.detach().float().cpu()
    return a.shape == b.shape and (a - b).abs().max().item() <= rel * max(b.abs().max().item(), 1e-12)


@pytest.mark.parametrize("name", ["pointpillar_16x", "second_16x"])
def test_detector_forward_and_loss_equal_the_cpu(name):
    cfg = load_experiment_cfg(KITTI / f"{name}.yaml", ["DATA_CONFIG.POINT_CLOUD_RANGE", SMALL])
    ds = fake_dataset(cfg, voxel=tuple(cfg.DATA_CONFIG.DATA_PROCESSOR[-1].VOXEL_SIZE))
    torch.manual_seed(0)
    cpu = build_network(cfg.MODEL, 3, ds)
    gpu = copy.deepcopy(cpu).to(CUDA)
    batch = _batch(name, ds.data_processor.grid_size)
    b_cpu, b_gpu = _to(batch, "cpu"), _to(batch, CUDA)
    cpu.train(), gpu.train()
    l_cpu, l_gpu = cpu(b_cpu)[0]["loss"], gpu(b_gpu)[0]["loss"]
    assert _close(l_gpu, l_cpu, 1e-3)
    assert _close(b_gpu["spatial_features_2d"], b_cpu["spatial_features_2d"], 1e-4)
    cpu.eval(), gpu.eval()
    with torch.no_grad():
        p_cpu, _ = cpu(_to(batch, "cpu"))
        p_gpu, _ = gpu(_to(batch, CUDA))
    for a, b in zip(p_gpu, p_cpu):
        assert a["pred_boxes"].device.type == "cuda" and len(a["pred_boxes"]) == len(b["pred_boxes"])


def _kd_step_equals_the_cpu(cpu, gpu, batch, compare=True):
    """One training forward of the CPU and the CUDA copy of a KD wrapper on the same batch and seed: the
    CUDA loss is finite and on the device; with ``compare`` it and the ``kd_*`` log values equal the
    CPU's; the backward reaches no teacher parameter."""
    torch.manual_seed(2)
    ret_cpu, tb_cpu, _ = cpu(_to(batch, "cpu"))
    torch.manual_seed(2)
    ret_gpu, tb_gpu, _ = gpu(_to(batch, CUDA))
    assert ret_gpu["loss"].device.type == CUDA.type and torch.isfinite(ret_gpu["loss"])
    if compare:
        assert _close(ret_gpu["loss"], ret_cpu["loss"], 1e-3), (ret_gpu["loss"].item(), ret_cpu["loss"].item())
        for key, value in tb_cpu.items():
            if key.startswith("kd_") and isinstance(value, float):
                assert abs(tb_gpu[key] - value) <= 1e-3 * max(abs(value), 1e-6), key
    ret_gpu["loss"].backward()
    assert all(p.grad is None for p in gpu.teacher.parameters())


@pytest.mark.parametrize("path", KD_CFGS, ids=lambda p: p.stem)
def test_kd_wrapper_and_method_losses_equal_the_cpu(path, tmp_path):
    cfg = load_experiment_cfg(path, ["DATA_CONFIG.POINT_CLOUD_RANGE", SMALL,
                                     "KD.TEACHER.DATA_CONFIG.POINT_CLOUD_RANGE", SMALL])
    vs = tuple(cfg.DATA_CONFIG.DATA_PROCESSOR[-1].VOXEL_SIZE)
    ds = fake_dataset(cfg, voxel=vs)
    torch.manual_seed(1)
    teacher = build_network(cfg.KD.TEACHER.MODEL, 3, ds)
    torch.save({"model_state": teacher.state_dict()}, tmp_path / "t.pth")
    cfg.KD.TEACHER.CKPT = str(tmp_path / "t.pth")
    torch.manual_seed(0)
    cpu = build_network(cfg.MODEL, 3, ds, kd_cfg=cfg.KD)
    gpu = copy.deepcopy(cpu).to(CUDA)
    cpu.train(), gpu.train()
    batch = _batch(path.stem, ds.data_processor.grid_size)
    _kd_step_equals_the_cpu(cpu, gpu, batch, compare=not path.stem.endswith(RANDOM_DRAWS))


def test_segmentor_loss_equals_the_cpu():
    from tests.helpers import SEG_GRID, SegGeometry, seg_batch

    cfg = load_experiment_cfg(REPO_ROOT / "tools" / "cfgs" / "synthetic_seg_models" / "cylinder3d_0.5x.yaml")
    ds = SegGeometry(cfg.CLASS_NAMES, SEG_GRID)
    torch.manual_seed(0)
    cpu = build_network(cfg.MODEL, len(cfg.CLASS_NAMES), ds)
    gpu = copy.deepcopy(cpu).to(CUDA)
    cpu.train(), gpu.train()
    batch = seg_batch(0, grid=SEG_GRID)
    l_cpu = cpu(_to(batch, "cpu"))[0]["loss"]
    l_gpu = gpu(_to(batch, CUDA))[0]["loss"]
    assert l_gpu.device.type == "cuda" and _close(l_gpu, l_cpu, 1e-3), (l_gpu.item(), l_cpu.item())


SEG_KD_CFGS = sorted((REPO_ROOT / "kd_cfgs" / "synthetic_seg").glob("*.yaml"))


def _draws_samples(stem):
    """PVD with an affinity term samples supervoxels and points (multinomial, randperm): the CUDA and
    CPU generators differ, so those losses are compared for being finite only."""
    return "_pvd" in stem and not stem.endswith(("_pvd_out", "_pvd_out_p"))


@pytest.mark.parametrize("path", SEG_KD_CFGS, ids=lambda p: p.stem)
def test_segmentation_kd_wrapper_and_method_losses_equal_the_cpu(path, tmp_path):
    """Every segmentation KD experiment of the embedded family (PVD and its variants, the five PVD
    baselines): the wrapper's loss on CUDA equals the CPU's for the same weights and batch."""
    from tests.helpers import seg_batch, seg_kd_wrapper

    method = {"AE_STEPS": 0} if path.stem.endswith("knowledge_adaptation") else None  # no AE phase
    cpu = seg_kd_wrapper(tmp_path, path, method)
    gpu = copy.deepcopy(cpu).to(CUDA)
    cpu.train(), gpu.train()
    batch = seg_batch(0)
    _kd_step_equals_the_cpu(cpu, gpu, batch, compare=not _draws_samples(path.stem))


def _kd_inputs_on_cuda(model, batch):
    """The batch a CUDA wrapper's KD methods read: teacher and student forwards run (outside what is checked)."""
    b = _to(batch, CUDA)
    model.run_teacher(b)
    for method in model.kd_methods:
        prepare = getattr(method, "prepare_student_inputs", None)
        if prepare is not None:
            b = prepare(b)
    model.student(b)
    return b


#: host copies of fewer elements are allowed inside a KD loss (ids of the few supervoxels, classes or
#: samples a loss loops over); a CPU kernel on a copy of the features or the graph copies far more
HOST_COPY_MAX = 256


@pytest.mark.parametrize("path", KD_CFGS + SEG_KD_CFGS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_no_kd_loss_copies_tensors_to_the_host(path, tmp_path):
    """The forward of every KD method on CUDA moves no tensor of HOST_COPY_MAX elements or more to the
    host (what a CPU kernel on a ``.cpu()`` copy would need); recorded with a dispatch mode
    (``tests.helpers.host_copies``), so scalars read for logging do not count."""
    from tests.helpers import host_copies, seg_batch, seg_kd_wrapper

    if path in SEG_KD_CFGS:
        method = {"AE_STEPS": 0} if path.stem.endswith("knowledge_adaptation") else None
        model, batch = seg_kd_wrapper(tmp_path, path, method).to(CUDA), seg_batch(0)
    else:
        cfg = load_experiment_cfg(path, ["DATA_CONFIG.POINT_CLOUD_RANGE", SMALL,
                                         "KD.TEACHER.DATA_CONFIG.POINT_CLOUD_RANGE", SMALL])
        ds = fake_dataset(cfg, voxel=tuple(cfg.DATA_CONFIG.DATA_PROCESSOR[-1].VOXEL_SIZE))
        torch.manual_seed(1)
        torch.save({"model_state": build_network(cfg.KD.TEACHER.MODEL, 3, ds).state_dict()}, tmp_path / "t.pth")
        cfg.KD.TEACHER.CKPT = str(tmp_path / "t.pth")
        torch.manual_seed(0)
        model, batch = build_network(cfg.MODEL, 3, ds, kd_cfg=cfg.KD).to(CUDA), _batch(path.stem, ds.data_processor.grid_size)
    model.train()
    b = _kd_inputs_on_cuda(model, batch)
    for method in model.kd_methods:
        with host_copies("cuda", min_numel=HOST_COPY_MAX) as h:
            loss, _ = method(b)
        assert torch.isfinite(loss) and not h.copies, (type(method).__name__, h.copies)


def test_box_ops_and_nms_run_on_the_device_and_equal_the_cpu():
    from pcdet.ops.iou3d_nms import boxes_bev_iou, boxes_iou3d, nms
    from tests.helpers import random_boxes

    a, b = random_boxes(200, 0), random_boxes(150, 1)
    for fn in (boxes_bev_iou, boxes_iou3d):
        on_gpu = fn(a.to(CUDA), b.to(CUDA))
        assert on_gpu.device.type == "cuda" and _close(on_gpu, fn(a, b), 1e-9)
    scores = torch.rand(200, generator=torch.Generator().manual_seed(2)).double()
    kept = nms(a.to(CUDA), scores.to(CUDA), 0.3)
    assert kept.device.type == "cuda" and torch.equal(kept.cpu(), nms(a, scores, 0.3))


def test_onnx_runtime_io_binding_reads_and_writes_device_memory(tmp_path):
    """ONNX Runtime's CUDA provider through IOBinding: the head maps stay on the GPU and equal the host
    feed's (the same session, so to rounding only). Skips when the CUDA provider is not installed."""
    ort = pytest.importorskip("onnxruntime")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("onnxruntime without CUDAExecutionProvider (pip install onnxruntime-gpu)")
    from pcdet.models.model_utils.onnx_utils import OnnxRuntimeDetector

    cfg = load_experiment_cfg(KITTI / "pointpillar_16x.yaml", ["DATA_CONFIG.POINT_CLOUD_RANGE", SMALL])
    ds = fake_dataset(cfg, training=False, voxel=tuple(cfg.DATA_CONFIG.DATA_PROCESSOR[-1].VOXEL_SIZE))
    torch.manual_seed(0)
    model = build_network(cfg.MODEL, 3, ds).to(CUDA).eval()
    batch = _to(random_batch(ds.data_processor.grid_size), CUDA)
    batch.pop("gt_boxes")
    with torch.no_grad():
        model(batch)
    x = batch["spatial_features"]
    det = OnnxRuntimeDetector(model, x, path=tmp_path / "dense.onnx", providers=["CUDAExecutionProvider"])
    assert det.providers[0] == "CUDAExecutionProvider" and det._binding_device(x) == ("cuda", x.device.index or 0)
    bound = det.dense_part(x)
    det.io_binding = False
    fed = det.dense_part(x)
    for key in det.output_names:
        assert bound[key].is_cuda and _close(bound[key], fed[key], 1e-5), key
