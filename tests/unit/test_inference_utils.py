"""BatchNorm folding and channels-last preparation keep a detector's outputs."""
import pytest
import torch

from pcdet.models import build_network
from pcdet.models.model_utils.inference_utils import fold_batchnorm_, prepare_for_inference
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
    out = _module_outputs(fast, batch)
    for key in ("pillar_features", "spatial_features_2d", "batch_cls_preds", "batch_box_preds"):
        torch.testing.assert_close(out[key], ref[key], rtol=1e-4, atol=1e-4)


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
    out = _module_outputs(fast, batch)
    torch.testing.assert_close(to_dense(out["encoded_spconv_tensor"]), to_dense(ref["encoded_spconv_tensor"]),
                               rtol=1e-4, atol=1e-4)
    for key in ("spatial_features_2d", "batch_cls_preds", "batch_box_preds"):
        torch.testing.assert_close(out[key], ref[key], rtol=1e-4, atol=1e-4)
