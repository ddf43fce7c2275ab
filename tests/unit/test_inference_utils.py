"""BatchNorm folding and channels-last preparation keep a detector's outputs."""
import pytest
import torch

from pcdet.models import build_network
from pcdet.models.model_utils.inference_utils import fold_batchnorm_, fold_zero_padding_, prepare_for_inference
from tests.helpers import fake_dataset, pillar_batch, small_cfg


def _randomise_bn(model):
    """Non-trivial BatchNorm statistics and affine parameters (folding them must still change nothing)."""
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)


def _module_outputs(model, batch):
    batch = dict(batch)
    with torch.no_grad():
        for module in model.module_list:
            batch = module(batch)
    return batch


@pytest.mark.parametrize("channels_last", [False, True])
def test_prepared_model_matches_eval_model(channels_last):
    torch.manual_seed(0)
    cfg = small_cfg("pointpillar_16x.yaml")
    ds = fake_dataset(cfg)
    model = build_network(cfg.MODEL, 3, ds)
    _randomise_bn(model)
    model.eval()
    batch = pillar_batch(ds.data_processor.grid_size)
    ref = _module_outputs(model, batch)
    fast = prepare_for_inference(model, channels_last=channels_last)
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in fast.modules())
    assert any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())  # a copy
    assert any(isinstance(m, torch.nn.ZeroPad2d) for m in model.modules())  # the stride-2 block entries
    assert not any(isinstance(m, torch.nn.ZeroPad2d) for m in fast.modules())
    thresh = fast.dense_head.predict_score_thresh
    assert thresh == cfg.MODEL.POST_PROCESSING.SCORE_THRESH
    fast.dense_head.predict_score_thresh = None  # every anchor decoded: the maps compare one to one
    out = _module_outputs(fast, batch)
    for key in ("pillar_features", "spatial_features_2d", "batch_cls_preds", "batch_box_preds"):
        torch.testing.assert_close(out[key], ref[key], rtol=1e-4, atol=1e-4)
    assert prepare_for_inference(model, decode_above_thresh=False).dense_head.predict_score_thresh is None


@pytest.mark.parametrize("multi_class_nms", [True, False])
def test_deploy_model_predicts_the_eval_models_boxes(multi_class_nms):
    """The whole deploy-mode forward (folded BN and pads, channels-last, decoding above the threshold)
    against the eval model's, both NMS kinds: BN folding changes rounding, so (as for ONNX Runtime) the
    same number of boxes survives (to 2%) with the same top-20 scores (to 1e-4)."""
    torch.manual_seed(0)
    cfg = small_cfg("pointpillar_16x.yaml")
    cfg.MODEL.POST_PROCESSING.NMS_CONFIG.MULTI_CLASSES_NMS = multi_class_nms
    cfg.MODEL.POST_PROCESSING.SCORE_THRESH = 0.3
    ds = fake_dataset(cfg)
    model = build_network(cfg.MODEL, 3, ds)
    _randomise_bn(model)
    with torch.no_grad():
        model.dense_head.conv_cls.bias.fill_(-1.0)  # some anchors above the threshold, some below
    model.eval()
    batch = pillar_batch(ds.data_processor.grid_size)
    batch.pop("gt_boxes")
    fast = prepare_for_inference(model)
    with torch.no_grad():
        ref, _ = model(dict(batch))
        out_batch = dict(batch)
        preds, _ = fast(out_batch)
    n_anchors = fast.dense_head._flat_anchors(1).shape[1]
    assert 0 < out_batch["batch_box_preds"].shape[1] < n_anchors
    assert all(len(r["pred_boxes"]) > 20 for r in ref)
    for p, r in zip(preds, ref):
        assert abs(len(p["pred_scores"]) - len(r["pred_scores"])) <= 0.02 * len(r["pred_scores"])
        top_p, top_r = p["pred_scores"].sort(descending=True)[0][:20], r["pred_scores"].sort(descending=True)[0][:20]
        assert torch.allclose(top_p, top_r, atol=1e-4)
    with pytest.raises(ValueError, match="decodes only"):
        fast.dense_head.kd_view(out_batch, decode=True)


def test_decoding_above_the_score_threshold_keeps_the_post_processed_boxes():
    """The deploy-mode head decodes only anchors with some class score >= the threshold (in any sample):
    those rows equal the full decoding's, and post-processing returns the same boxes, scores, labels."""
    torch.manual_seed(0)
    cfg = small_cfg("pointpillar_16x.yaml")
    ds = fake_dataset(cfg)
    model = build_network(cfg.MODEL, 3, ds).eval()
    head = model.dense_head
    batch = _module_outputs(model, pillar_batch(ds.data_processor.grid_size))
    g = torch.Generator().manual_seed(1)  # spread-out logits of the head maps' shapes: no ties in score
    maps = {k: torch.randn(batch[k].shape, generator=g) * (2.0 if k == "cls_preds" else 0.3)
            for k in ("cls_preds", "box_preds", "dir_cls_preds")}
    cls_all, box_all = head.generate_predicted_boxes(2, maps["cls_preds"], maps["box_preds"], maps["dir_cls_preds"])
    thresh = float(torch.sigmoid(cls_all).amax(dim=-1).amax(dim=0).quantile(0.8))
    head.predict_score_thresh = thresh
    cls_kept, box_kept = head.generate_predicted_boxes(2, maps["cls_preds"], maps["box_preds"], maps["dir_cls_preds"])
    keep = (torch.sigmoid(cls_all) >= thresh).any(dim=-1).any(dim=0)
    assert 0 < int(keep.sum()) < keep.numel() // 2
    assert torch.equal(cls_kept, cls_all[:, keep]) and torch.equal(box_kept, box_all[:, keep])
    head.train()
    assert head.generate_predicted_boxes(2, maps["cls_preds"], maps["box_preds"])[0].shape == cls_all.shape
    head.eval()
    cfg.MODEL.POST_PROCESSING.SCORE_THRESH = thresh
    model.model_cfg.POST_PROCESSING.SCORE_THRESH = thresh
    full, _ = model.post_processing({"batch_size": 2, "batch_cls_preds": cls_all, "batch_box_preds": box_all})
    kept, _ = model.post_processing({"batch_size": 2, "batch_cls_preds": cls_kept, "batch_box_preds": box_kept})
    assert [len(p["pred_boxes"]) for p in full] == [len(p["pred_boxes"]) for p in kept] and len(full[0]["pred_boxes"])
    for a, b in zip(full, kept):
        for key in ("pred_boxes", "pred_scores", "pred_labels"):
            assert torch.equal(a[key], b[key])


def test_zero_pad_folds_into_the_following_convolution_only_when_symmetric():
    torch.manual_seed(0)
    nn = torch.nn
    seq = nn.Sequential(nn.ZeroPad2d(1), nn.Conv2d(4, 6, 3, stride=2, padding=0, bias=False), nn.ReLU(),
                        nn.ZeroPad2d((1, 0, 1, 0)), nn.Conv2d(6, 6, 3, padding=0),  # asymmetric: stays
                        nn.ZeroPad2d(2), nn.Conv2d(6, 6, 3, padding=1),  # conv already pads: stays
                        nn.ZeroPad2d((1, 1, 2, 2)), nn.Conv2d(6, 6, 3, stride=2))  # (left, right, top, bottom)
    x = torch.randn(2, 4, 17, 12)
    ref = seq(x)
    assert fold_zero_padding_(seq) == 2
    assert isinstance(seq[0], nn.Identity) and seq[1].padding == (1, 1)
    assert isinstance(seq[7], nn.Identity) and seq[8].padding == (2, 1)  # conv padding is (h, w)
    assert isinstance(seq[3], nn.ZeroPad2d) and isinstance(seq[5], nn.ZeroPad2d)
    torch.testing.assert_close(seq(x), ref, rtol=1e-5, atol=1e-5)


def test_folding_refuses_training_mode():
    cfg = small_cfg("pointpillar_16x.yaml")
    model = build_network(cfg.MODEL, 3, fake_dataset(cfg))
    with pytest.raises(RuntimeError, match="eval"):
        fold_batchnorm_(model.train())


def test_sparse_conv_batchnorm_folding_keeps_second_outputs():
    """SECOND's sparse blocks (spconv conv -> BatchNorm1d -> ReLU): every BN, sparse ones included, is
    folded, and the encoder's and head's outputs are unchanged."""
    import numpy as np

    from pcdet.models.model_utils.inference_utils import FeatureBias
    from pcdet.train_utils.experiment import load_experiment_cfg
    from pcdet.utils.paths import REPO_ROOT
    from pcdet.utils.spconv_utils import to_dense

    cfg = load_experiment_cfg(REPO_ROOT / "tools" / "cfgs" / "kitti_models" / "second_16x.yaml")
    cfg.DATA_CONFIG.POINT_CLOUD_RANGE = [0, -6.4, -3, 12.8, 6.4, 1]
    ds = fake_dataset(cfg, voxel=(0.05, 0.05, 0.1))
    torch.manual_seed(0)
    model = build_network(cfg.MODEL, 3, ds)
    _randomise_bn(model)
    model.eval()
    rng = np.random.default_rng(0)
    grid = ds.data_processor.grid_size
    cells = rng.choice(int(np.prod(grid)), 1200, replace=False)
    coords = np.stack([np.repeat([0, 1], 600), cells // (grid[0] * grid[1]), (cells // grid[0]) % grid[1],
                       cells % grid[0]], 1).astype(np.int32)
    batch = {"voxels": torch.from_numpy(rng.uniform(0, 1, (1200, 5, 4)).astype(np.float32)),
             "voxel_num_points": torch.from_numpy(rng.integers(1, 6, 1200)),
             "voxel_coords": torch.from_numpy(coords), "batch_size": 2}
    ref = _module_outputs(model, batch)
    fast = prepare_for_inference(model)
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in fast.modules())
    assert sum(isinstance(m, FeatureBias) for m in fast.modules()) == 12  # input 1, conv1 1, conv2-4 3 each, out 1
    assert not [n for n, m in fast.named_modules() if m.training]  # the modules the folds insert too
    fast.dense_head.predict_score_thresh = None  # every anchor decoded: the maps compare one to one
    out = _module_outputs(fast, batch)
    torch.testing.assert_close(to_dense(out["encoded_spconv_tensor"]), to_dense(ref["encoded_spconv_tensor"]),
                               rtol=1e-4, atol=1e-4)
    for key in ("spatial_features_2d", "batch_cls_preds", "batch_box_preds"):
        torch.testing.assert_close(out[key], ref[key], rtol=1e-4, atol=1e-4)
