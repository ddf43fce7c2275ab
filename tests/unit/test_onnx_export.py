"""ONNX export of the dense part (scattered BEV map -> head maps) and ONNX Runtime inference: the
runtime's head maps equal PyTorch's (max abs difference <= 1e-4 x the largest map value, fp32 on CPU),
and after decoding and NMS the same number of boxes survive (to 2%) with the same top scores (to 1e-4),
for PointPillars and SECOND, in eval and deploy (BatchNorm folded) mode."""
import pytest
import torch

from pcdet.models import build_network
from pcdet.models.model_utils.inference_utils import prepare_for_inference
from pcdet.train_utils.experiment import load_experiment_cfg
from pcdet.utils.paths import REPO_ROOT
from tests.helpers import fake_dataset, random_batch, randomise_bn1d, voxel_batch

pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (requirements.txt installs it)")
from pcdet.models.model_utils.onnx_utils import DenseBEVPart, OnnxExportError, OnnxRuntimeDetector  # noqa: E402

KITTI = REPO_ROOT / "tools" / "cfgs" / "kitti_models"
TOL = 1e-4

pytestmark = pytest.mark.usefixtures("single_thread")


def _model_and_batch(name):
    rng = "[0, -6.4, -3, 12.8, 6.4, 1]"
    cfg = load_experiment_cfg(KITTI / f"{name}.yaml", ["DATA_CONFIG.POINT_CLOUD_RANGE", rng])
    vs = tuple(cfg.DATA_CONFIG.DATA_PROCESSOR[-1].VOXEL_SIZE)
    ds = fake_dataset(cfg, training=False, voxel=vs)
    torch.manual_seed(0)
    model = build_network(cfg.MODEL, 3, ds)
    randomise_bn1d(model, torch.Generator().manual_seed(0), (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d))
    # head biases that make some anchors score above the threshold, so NMS has boxes to keep
    with torch.no_grad():
        model.dense_head.conv_cls.bias.fill_(-1.0)
    model.eval()
    grid = ds.data_processor.grid_size
    batch = voxel_batch(grid) if name.startswith("second") else random_batch(grid)
    batch.pop("gt_boxes")
    return model, batch


def _clone(batch):
    return {k: (v.clone() if torch.is_tensor(v) else v) for k, v in batch.items()}


@pytest.mark.parametrize("name", ["pointpillar_16x", "second_16x"])
@pytest.mark.parametrize("mode", ["eval", "deploy"])
def test_onnx_runtime_equals_pytorch(name, mode, tmp_path):
    model, batch = _model_and_batch(name)
    if mode == "deploy":
        model = prepare_for_inference(model)
    ref_batch = _clone(batch)
    with torch.no_grad():
        ref_preds, _ = model(ref_batch)
    ort_model = OnnxRuntimeDetector(model, ref_batch["spatial_features"], path=tmp_path / "dense.onnx", threads=1)
    assert (tmp_path / "dense.onnx").is_file() and ort_model.providers[0] == "CPUExecutionProvider"
    # the export shares the detector's backbone and head: it must leave them in eval mode, so that the
    # detector (and the head's decoding around the session) still runs as it did before the export
    assert not [n for n, m in model.named_modules() if m.training]
    with torch.no_grad():
        again, _ = model(_clone(batch))
    assert all(torch.equal(a["pred_scores"], r["pred_scores"]) for a, r in zip(again, ref_preds))
    maps = ort_model.dense_part(ref_batch["spatial_features"])
    for key in ort_model.output_names:
        ref = ref_batch[key]
        assert maps[key].shape == ref.shape, key
        assert (maps[key] - ref).abs().max().item() <= TOL * ref.abs().max().item(), key
    preds, _ = ort_model(_clone(batch))
    # Boxes after decoding and NMS: with random weights neighbouring anchors score within rounding of
    # each other, so which of two near-equal boxes NMS keeps can flip between the runtimes; what
    # cannot change is how many boxes survive (to 2%) and the sorted scores at the top.
    assert all(len(p["pred_boxes"]) > 20 for p in ref_preds), [len(p["pred_boxes"]) for p in ref_preds]
    for p, r in zip(preds, ref_preds):
        assert abs(len(p["pred_scores"]) - len(r["pred_scores"])) <= 0.02 * len(r["pred_scores"])
        top_p, top_r = p["pred_scores"].sort(descending=True)[0][:20], r["pred_scores"].sort(descending=True)[0][:20]
        assert torch.allclose(top_p, top_r, atol=1e-4)


def test_io_binding_equals_the_host_feed(tmp_path):
    """The session writing into torch tensors (IOBinding, the default) gives the numpy feed's maps bit for
    bit, also for a batch size other than the export's (the graph's batch axis is dynamic)."""
    model, batch = _model_and_batch("pointpillar_16x")
    ref_batch = _clone(batch)
    with torch.no_grad():
        model(ref_batch)
    x = ref_batch["spatial_features"]
    ort_model = OnnxRuntimeDetector(model, x, path=tmp_path / "dense.onnx", threads=1)
    assert ort_model.io_binding and ort_model._output_shapes(x.shape[0]) is not None
    for inp in (x, x[:1], x.contiguous(memory_format=torch.channels_last)):
        ort_model.io_binding = True
        bound = ort_model.dense_part(inp)
        ort_model.io_binding = False
        fed = ort_model.dense_part(inp)
        for key in ort_model.output_names:
            assert bound[key].shape[0] == inp.shape[0] and torch.equal(bound[key], fed[key]), key


def test_a_channels_last_map_is_read_in_place_by_an_nhwc_graph(tmp_path):
    """The deploy-mode scatter's channels-last map: the graph takes it as (B, ny, nx, C) without a copy,
    and its head maps equal those of the graph that takes the NCHW copy."""
    from pcdet.models.model_utils.onnx_utils import input_layout_of, layout_input

    model = prepare_for_inference(_model_and_batch("pointpillar_16x")[0])
    batch = _model_and_batch("pointpillar_16x")[1]
    with torch.no_grad():
        model(batch)
    x = batch["spatial_features"]
    assert input_layout_of(x) == "nhwc" and input_layout_of(x.contiguous()) == "nchw"
    assert layout_input(x, "nhwc").data_ptr() == x.data_ptr()  # a view, no copy
    nhwc = OnnxRuntimeDetector(model, x, path=tmp_path / "nhwc.onnx", threads=1)
    nchw = OnnxRuntimeDetector(model, x, path=tmp_path / "nchw.onnx", threads=1, input_layout="nchw")
    b, c, ny, nx = x.shape
    assert nhwc.session.get_inputs()[0].shape[1:] == [ny, nx, c]
    assert nchw.session.get_inputs()[0].shape[1:] == [c, ny, nx]
    a, r = nhwc.dense_part(x), nchw.dense_part(x)
    for key in nhwc.output_names:
        assert (a[key] - r[key]).abs().max().item() <= TOL * r[key].abs().max().item(), key
    with pytest.raises(ValueError, match="input layout"):
        layout_input(x, "nc")


def test_export_refuses_a_model_without_a_bev_head():
    with pytest.raises(OnnxExportError, match="backbone_2d"):
        DenseBEVPart(torch.nn.Module())
