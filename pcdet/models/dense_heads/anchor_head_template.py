"""Anchor-based dense head: anchors, targets, losses and box decoding shared by anchor heads.

Training: ``forward`` stores predictions and targets in ``self.forward_ret_dict``;
``get_loss() -> (loss, tb_dict)`` combines sigmoid focal classification, weighted smooth-L1 box
regression with the sin-difference trick on the heading, and a direction classifier.
Inference: ``generate_predicted_boxes`` writes ``batch_cls_preds`` (B, A, C) logits and
``batch_box_preds`` (B, A, 7) decoded LiDAR boxes, A = every anchor (a deploy-mode copy,
``predict_score_thresh`` set, keeps only the anchors above the score threshold). Distillation: :meth:`kd_view` (the view every
dense head offers, whatever its kind) splits the raw maps per BEV cell and anchor slot.
"""
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from pcdet.models.dense_heads.target_assigner.anchor_generator import AnchorGenerator
from pcdet.models.dense_heads.target_assigner.axis_aligned_target_assigner import AxisAlignedTargetAssigner
from pcdet.utils import box_coder_utils, loss_utils
from pcdet.utils.common_utils import limit_period


def split_anchor_map(head_map, k):
    """(B, ny, nx, A*k) head map -> (B, ny, nx, A, k) (k = classes or box code size); half precision -> float32."""
    b, ny, nx, ak = head_map.shape
    k = int(k)
    if ak % k:
        raise ValueError(f"head map with {ak} channels is not a multiple of {k}")
    m = head_map.float() if head_map.dtype in (torch.float16, torch.bfloat16) else head_map
    return m.reshape(b, ny, nx, ak // k, k)


class AnchorHeadTemplate(nn.Module):
    def __init__(self, model_cfg, num_class, class_names, grid_size, point_cloud_range, predict_boxes_when_training):
        super().__init__()
        self.model_cfg = model_cfg
        self.num_class = num_class
        self.class_names = class_names
        self.predict_boxes_when_training = predict_boxes_when_training
        anchor_target_cfg = model_cfg.TARGET_ASSIGNER_CONFIG
        coder = box_coder_utils.BOX_CODERS.get(anchor_target_cfg.BOX_CODER, "MODEL.DENSE_HEAD.TARGET_ASSIGNER_CONFIG.BOX_CODER")
        self.box_coder = coder(
            **anchor_target_cfg.get("BOX_CODER_CONFIG", {})
        )
        anchor_cfgs = model_cfg.ANCHOR_GENERATOR_CONFIG
        anchors, self.num_anchors_per_location = self.generate_anchors(
            anchor_cfgs, grid_size=grid_size, point_cloud_range=point_cloud_range, anchor_ndim=self.box_coder.code_size
        )
        for i, a in enumerate(anchors):  # buffers: follow .to(device), not saved in checkpoints
            self.register_buffer(f"_anchors_{i}", a, persistent=False)
        self._num_anchor_sets = len(anchors)
        self.target_assigner = AxisAlignedTargetAssigner(model_cfg, class_names, self.box_coder)
        self.forward_ret_dict = {}
        self.build_losses(model_cfg.LOSS_CONFIG)

    @property
    def anchors(self):
        return [getattr(self, f"_anchors_{i}") for i in range(self._num_anchor_sets)]

    @staticmethod
    def generate_anchors(anchor_generator_cfg, grid_size, point_cloud_range, anchor_ndim=7):
        generator = AnchorGenerator(anchor_range=point_cloud_range, anchor_generator_config=anchor_generator_cfg)
        feature_map_size = [np.asarray(grid_size[:2]) // c["feature_map_stride"] for c in anchor_generator_cfg]
        anchors_list, num_per_loc = generator.generate_anchors(feature_map_size)
        if anchor_ndim != 7:
            anchors_list = [
                torch.cat([a, a.new_zeros(*a.shape[:-1], anchor_ndim - 7)], dim=-1) for a in anchors_list
            ]
        return anchors_list, num_per_loc

    def build_losses(self, losses_cfg):
        self.cls_loss_func = loss_utils.SigmoidFocalClassificationLoss(alpha=0.25, gamma=2.0)
        code_weights = losses_cfg.LOSS_WEIGHTS.get("code_weights", None)
        self.reg_loss_func = loss_utils.WeightedSmoothL1Loss(code_weights=code_weights)
        self.dir_loss_func = loss_utils.WeightedCrossEntropyLoss()

    def assign_targets(self, gt_boxes):
        return self.target_assigner.assign_targets(self.anchors, gt_boxes)

    # ------------------------------------------------------------------ losses
    def get_cls_layer_loss(self):
        cls_preds = self.forward_ret_dict["cls_preds"].float()  # losses in fp32 under mixed precision
        box_cls_labels = self.forward_ret_dict["box_cls_labels"]
        batch_size = int(cls_preds.shape[0])
        cared = box_cls_labels >= 0
        positives = box_cls_labels > 0
        negatives = box_cls_labels == 0
        w = self.model_cfg.LOSS_CONFIG.LOSS_WEIGHTS
        cls_weights = negatives.float() * w.get("neg_cls_weight", 1.0) + positives.float() * w.get("pos_cls_weight", 1.0)
        pos_normalizer = positives.sum(1, keepdim=True).float()
        cls_weights = cls_weights / torch.clamp(pos_normalizer, min=1.0)
        cls_targets = (box_cls_labels * cared.type_as(box_cls_labels)).long()
        one_hot = F.one_hot(cls_targets, num_classes=self.num_class + 1).to(cls_preds.dtype)[..., 1:]
        cls_preds = cls_preds.view(batch_size, -1, self.num_class)
        cls_loss = self.cls_loss_func(cls_preds, one_hot, weights=cls_weights).sum() / batch_size
        cls_loss = cls_loss * w["cls_weight"]
        return cls_loss, {"rpn_loss_cls": cls_loss.item()}

    @staticmethod
    def add_sin_difference(boxes1, boxes2, dim=6):
        """Replace the heading code by sin(a - b) split across the two tensors (a periodic-aware loss)."""
        rad_pred = torch.sin(boxes1[..., dim : dim + 1]) * torch.cos(boxes2[..., dim : dim + 1])
        rad_tg = torch.cos(boxes1[..., dim : dim + 1]) * torch.sin(boxes2[..., dim : dim + 1])
        boxes1 = torch.cat([boxes1[..., :dim], rad_pred, boxes1[..., dim + 1 :]], dim=-1)
        boxes2 = torch.cat([boxes2[..., :dim], rad_tg, boxes2[..., dim + 1 :]], dim=-1)
        return boxes1, boxes2

    @staticmethod
    def get_direction_target(anchors, reg_targets, one_hot=True, dir_offset=0.0, num_bins=2):
        batch_size = reg_targets.shape[0]
        anchors = anchors.view(batch_size, -1, anchors.shape[-1])
        rot_gt = reg_targets[..., 6] + anchors[..., 6]
        offset_rot = limit_period(rot_gt - dir_offset, 0, 2 * np.pi)
        dir_targets = torch.floor(offset_rot / (2 * np.pi / num_bins)).long().clamp(min=0, max=num_bins - 1)
        if one_hot:
            return F.one_hot(dir_targets, num_classes=num_bins).to(anchors.dtype)
        return dir_targets

    def _flat_anchors(self, batch_size):
        anchors = torch.cat(self.anchors, dim=-3)
        return anchors.view(1, -1, anchors.shape[-1]).repeat(batch_size, 1, 1)

    def get_box_reg_layer_loss(self):
        box_preds = self.forward_ret_dict["box_preds"].float()
        dir_preds = self.forward_ret_dict.get("dir_cls_preds", None)
        dir_preds = dir_preds.float() if dir_preds is not None else None
        targets = self.forward_ret_dict["box_reg_targets"]
        labels = self.forward_ret_dict["box_cls_labels"]
        batch_size = int(box_preds.shape[0])
        positives = labels > 0
        reg_weights = positives.float()
        reg_weights = reg_weights / torch.clamp(positives.sum(1, keepdim=True).float(), min=1.0)
        anchors = self._flat_anchors(batch_size)
        box_preds = box_preds.view(batch_size, -1, box_preds.shape[-1] // self.num_anchors_per_location_total)
        p_sin, t_sin = self.add_sin_difference(box_preds, targets)
        w = self.model_cfg.LOSS_CONFIG.LOSS_WEIGHTS
        loc_loss = self.reg_loss_func(p_sin, t_sin, weights=reg_weights).sum() / batch_size * w["loc_weight"]
        tb = {"rpn_loss_loc": loc_loss.item()}
        box_loss = loc_loss
        if dir_preds is not None:
            nb = self.model_cfg.NUM_DIR_BINS
            dir_targets = self.get_direction_target(
                anchors, targets, dir_offset=self.model_cfg.DIR_OFFSET, num_bins=nb
            )
            dir_logits = dir_preds.view(batch_size, -1, nb)
            weights = positives.type_as(dir_logits)
            weights = weights / torch.clamp(weights.sum(-1, keepdim=True), min=1.0)
            dir_loss = self.dir_loss_func(dir_logits, dir_targets, weights=weights).sum() / batch_size
            dir_loss = dir_loss * w["dir_weight"]
            box_loss = box_loss + dir_loss
            tb["rpn_loss_dir"] = dir_loss.item()
        return box_loss, tb

    def get_loss(self):
        cls_loss, tb = self.get_cls_layer_loss()
        box_loss, tb_box = self.get_box_reg_layer_loss()
        tb.update(tb_box)
        rpn_loss = cls_loss + box_loss
        tb["rpn_loss"] = rpn_loss.item()
        return rpn_loss, tb

    # --------------------------------------------------------------- decoding
    @property
    def num_anchors_per_location_total(self):
        return sum(self.num_anchors_per_location)

    def kd_view(self, batch_dict, suffix="", decode=False):
        """What distillation reads of this head's output in ``batch_dict`` (``suffix`` ``_tea``: the teacher's).

        ``cls`` (B, ny, nx, A, C) class logits and ``box`` (B, ny, nx, A, code) box codes (half precision
        from a bf16 / fp16 forward converted to float32; A anchor slots per cell, a centre head has
        A = 1); with ``decode`` also ``cls_flat`` (B, N, C) and ``boxes`` (B, N, 7) decoded LiDAR boxes,
        N = ny * nx * A (the head's own decoded predictions when it wrote them, else decoded here
        from the raw maps). A deploy-mode head (``predict_score_thresh`` set) refuses ``decode``: it
        decodes only some anchors.
        """
        def get(key):
            if key + suffix not in batch_dict:
                raise KeyError(f"distillation needs {key + suffix!r} (written by {type(self).__name__}); "
                               f"present: {sorted(batch_dict)}")
            return batch_dict[key + suffix]

        cls_map, box_map = get("cls_preds"), get("box_preds")
        if decode and self.predict_score_thresh is not None:
            raise ValueError(f"{type(self).__name__}: distillation reads every anchor's decoded box, but this head "
                             f"decodes only those scoring >= {self.predict_score_thresh} (a prepare_for_inference "
                             f"copy); distil from the training model")
        view = {"cls": split_anchor_map(cls_map, self.num_class), "box": split_anchor_map(box_map, self.box_coder.code_size)}
        if decode:
            if "batch_cls_preds" + suffix in batch_dict and "batch_box_preds" + suffix in batch_dict:
                view["cls_flat"], view["boxes"] = batch_dict["batch_cls_preds" + suffix], batch_dict["batch_box_preds" + suffix]
            else:
                view["cls_flat"], view["boxes"] = self.generate_predicted_boxes(
                    int(batch_dict["batch_size"]), cls_map, box_map, batch_dict.get("dir_cls_preds" + suffix, None))
        return view

    #: Deploy mode (set by ``prepare_for_inference`` to the detector's ``POST_PROCESSING.SCORE_THRESH``):
    #: in eval mode, decode only the anchors at which some class's sigmoid score reaches it (in any sample
    #: of the batch). Post-processing drops every other anchor before NMS, so its boxes are unchanged (a
    #: score can differ in its last bit: the sigmoid then runs over a shorter tensor, with another split
    #: between vectorised and scalar code); ``batch_*_preds`` hold those anchors only. None (default):
    #: every anchor is decoded.
    predict_score_thresh = None

    def generate_predicted_boxes(self, batch_size, cls_preds, box_preds, dir_cls_preds=None):
        """Head maps (B, ny, nx, A*k) -> ``batch_cls_preds`` (B, N, C) logits, ``batch_box_preds`` (B, N, 7):
        N = every anchor, or the anchors above :attr:`predict_score_thresh` when it is set (eval only)."""
        anchors = self._flat_anchors(batch_size)
        num_anchors = anchors.shape[1]
        batch_cls_preds = cls_preds.view(batch_size, num_anchors, -1).float()
        box_preds = box_preds.view(batch_size, num_anchors, -1)
        dir_preds = dir_cls_preds.view(batch_size, num_anchors, -1) if dir_cls_preds is not None else None
        if self.predict_score_thresh is not None and not self.training:
            # the comparison post-processing makes (model_nms_utils: sigmoid score >= SCORE_THRESH)
            keep = (torch.sigmoid(batch_cls_preds) >= self.predict_score_thresh).any(dim=-1).any(dim=0)
            batch_cls_preds, box_preds, anchors = batch_cls_preds[:, keep], box_preds[:, keep], anchors[:, keep]
            dir_preds = dir_preds[:, keep] if dir_preds is not None else None
        batch_box_preds = self.box_coder.decode_torch(box_preds, anchors)
        if dir_preds is not None:
            nb = self.model_cfg.NUM_DIR_BINS
            dir_labels = torch.max(dir_preds, dim=-1)[1]
            period = 2 * np.pi / nb
            dir_rot = limit_period(
                batch_box_preds[..., 6] - self.model_cfg.DIR_OFFSET, self.model_cfg.DIR_LIMIT_OFFSET, period
            )
            batch_box_preds[..., 6] = dir_rot + self.model_cfg.DIR_OFFSET + period * dir_labels.to(batch_box_preds.dtype)
        return batch_cls_preds, batch_box_preds
