"""BatchNorm folding and channels-last preparation keep a detector's outputs."""
import pytest
import torch

from pcdet.models import build_network
from pcdet.models.model_utils.inference_utils import fold_batchnorm_, prepare_for_inference
from tests.helpers import fake_dataset, pillar_batch, small_cfg


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
    for m in model.modules():  # non-trivial BatchNorm statistics and affine parameters
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
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
