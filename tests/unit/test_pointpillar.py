"""PointPillars model framework: configs build with channel counts passed along, losses backprop,
targets are consistent with anchors, post-processing returns boxes."""

import pytest
import torch

from pcdet.config import ConfigKeyError, cfg_from_list, cfg_from_yaml_file
from pcdet.models import build_network
from pcdet.utils.paths import REPO_ROOT
from tests.helpers import fake_dataset, pillar_batch, small_cfg

CFG_DIR = REPO_ROOT / "tools" / "cfgs" / "kitti_models"


@pytest.mark.parametrize(
    "name,vfe,bev",
    [("pointpillar.yaml", 64, 384), ("pointpillar_4x.yaml", 32, 192), ("pointpillar_16x.yaml", 16, 96),
     ("pointpillar_l3.yaml", 64, 384)],
)
def test_channel_counts_flow_from_module_to_module(name, vfe, bev):
    cfg = small_cfg(name)
    model = build_network(cfg.MODEL, 3, fake_dataset(cfg))
    assert model.vfe.get_output_feature_dim() == vfe
    assert model.map_to_bev_module.num_bev_features == vfe
    assert model.backbone_2d.num_bev_features == bev
    assert model.dense_head.conv_cls.in_channels == bev


def test_students_are_overrides_of_the_teacher():
    t = cfg_from_yaml_file(CFG_DIR / "pointpillar.yaml")
    s = cfg_from_yaml_file(CFG_DIR / "pointpillar_4x.yaml")
    assert s.MODEL.BACKBONE_2D.NUM_FILTERS == [32, 64, 128] and s.MODEL.BACKBONE_2D.LAYER_NUMS == t.MODEL.BACKBONE_2D.LAYER_NUMS
    assert s.MODEL.DENSE_HEAD == t.MODEL.DENSE_HEAD and s.DATA_CONFIG == t.DATA_CONFIG
    assert cfg_from_yaml_file(CFG_DIR / "pointpillar_l5.yaml").MODEL.BACKBONE_2D.LAYER_NUMS == [1, 2, 2]


def test_train_step_backprop_and_eval():
    torch.manual_seed(0)
    cfg = small_cfg("pointpillar_16x.yaml")
    ds = fake_dataset(cfg)
    model = build_network(cfg.MODEL, 3, ds)
    model.train()
    batch = pillar_batch(ds.data_processor.grid_size)
    ret, tb, _ = model(dict(batch))
    assert torch.isfinite(ret["loss"]) and {"rpn_loss_cls", "rpn_loss_loc", "rpn_loss_dir"} <= set(tb)
    ret["loss"].backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    model.eval()
    with torch.no_grad():
        preds, recall = model(dict(batch))
    assert len(preds) == 2 and recall["gt"] == 3
    for p in preds:
        assert p["pred_boxes"].shape[1] == 7 and p["pred_scores"].shape == p["pred_labels"].shape
        assert (p["pred_labels"] >= 1).all() and (p["pred_labels"] <= 3).all()


def test_targets_decode_back_to_gt_boxes():
    cfg = small_cfg("pointpillar_16x.yaml")
    model = build_network(cfg.MODEL, 3, fake_dataset(cfg))
    head = model.dense_head
    gt = pillar_batch(fake_dataset(cfg).data_processor.grid_size)["gt_boxes"]
    t = head.assign_targets(gt)
    anchors = head._flat_anchors(gt.shape[0])
    for b in range(gt.shape[0]):
        pos = t["box_cls_labels"][b] > 0
        assert pos.any()
        decoded = head.box_coder.decode_torch(t["box_reg_targets"][b][pos], anchors[b][pos])
        valid = gt[b][gt[b][:, -1] > 0]
        # every positive anchor regresses onto one of the GT boxes of its class
        d = (decoded[:, None, :7] - valid[None, :, :7]).abs().amax(-1)
        best = d.min(dim=1)
        assert best.values.max() < 1e-4
        assert (valid[best.indices, -1].int() == t["box_cls_labels"][b][pos]).all()
    # each GT box gets at least one positive anchor (forced match)
    assert int((t["box_cls_labels"][0] > 0).sum()) >= 2


def test_unknown_model_key_is_an_error():
    cfg = small_cfg()
    cfg.MODEL.BACKBONE_2D.NUM_FILTER = [1]
    with pytest.raises(ConfigKeyError, match="NUM_FILTER"):
        build_network(cfg.MODEL, 3, fake_dataset(cfg))
    with pytest.raises(ConfigKeyError, match="closest"):
        cfg_from_list(["MODEL.BACKBONE_2D.LAYER_NUM", "[1,1,1]"], small_cfg())
