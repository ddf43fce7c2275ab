"""IoU-based anchor target assignment with per-class matched/unmatched thresholds.

IoU is the bird's-eye-view IoU of the boxes snapped to the nearest axis (heading rounded to 0 or
90 degrees), as in SECOND/PointPillars: cheap, and exact for the axis-aligned anchors used.
An anchor is positive when its best IoU >= MATCHED_THRESHOLD or it is the best anchor of some GT
box (with IoU > 0), negative when its best IoU < UNMATCHED_THRESHOLD, ignored otherwise.
"""
import numpy as np
import torch

from pcdet.utils.common_utils import limit_period


def boxes3d_nearest_bev_corners(boxes3d):
    """(N, 7) LiDAR boxes -> (N, 4) axis-aligned BEV boxes [x1, y1, x2, y2] after snapping the heading."""
    rot = limit_period(boxes3d[:, 6], offset=0.5, period=np.pi).abs()
    swap = (rot > np.pi / 4)[:, None]
    dims = torch.where(swap, boxes3d[:, [4, 3]], boxes3d[:, [3, 4]])
    return torch.cat([boxes3d[:, 0:2] - dims / 2, boxes3d[:, 0:2] + dims / 2], dim=1)


def boxes_iou_normal(a, b):
    """(N, 4) x (M, 4) axis-aligned boxes -> (N, M) IoU."""
    x_min = torch.max(a[:, None, 0], b[None, :, 0])
    x_max = torch.min(a[:, None, 2], b[None, :, 2])
    y_min = torch.max(a[:, None, 1], b[None, :, 1])
    y_max = torch.min(a[:, None, 3], b[None, :, 3])
    inter = (x_max - x_min).clamp(min=0) * (y_max - y_min).clamp(min=0)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / torch.clamp(area_a[:, None] + area_b[None, :] - inter, min=1e-6)


def boxes3d_nearest_bev_iou(boxes_a, boxes_b):
    return boxes_iou_normal(boxes3d_nearest_bev_corners(boxes_a), boxes3d_nearest_bev_corners(boxes_b))


class AxisAlignedTargetAssigner:
    def __init__(self, model_cfg, class_names, box_coder):
        self.box_coder = box_coder
        self.class_names = np.array(class_names)
        anchor_cfgs = model_cfg.ANCHOR_GENERATOR_CONFIG
        self.anchor_class_names = [c["class_name"] for c in anchor_cfgs]
        self.matched_thresholds = {c["class_name"]: c["matched_threshold"] for c in anchor_cfgs}
        self.unmatched_thresholds = {c["class_name"]: c["unmatched_threshold"] for c in anchor_cfgs}
        self.norm_by_num_examples = model_cfg.TARGET_ASSIGNER_CONFIG.get("NORM_BY_NUM_EXAMPLES", False)

    def assign_targets(self, all_anchors, gt_boxes_with_classes):
        """all_anchors: per class (1, ny, nx, ns, nr, 7); gt: (B, M, 8) with 1-based class in the last column.

        Returns box_cls_labels (B, A), box_reg_targets (B, A, code_size), reg_weights (B, A), in the
        head's anchor order (y, x, class, size, rotation).
        """
        batch_size = gt_boxes_with_classes.shape[0]
        gt_classes = gt_boxes_with_classes[:, :, -1]
        gt_boxes = gt_boxes_with_classes[:, :, :-1]
        labels_b, targets_b, weights_b = [], [], []
        for k in range(batch_size):
            cur_gt = gt_boxes[k]
            cnt = cur_gt.shape[0] - 1
            while cnt > 0 and cur_gt[cnt].sum() == 0:  # strip the collate padding
                cnt -= 1
            cur_gt = cur_gt[: cnt + 1]
            cur_cls = gt_classes[k][: cnt + 1].long()
            valid = cur_cls > 0
            cur_gt, cur_cls = cur_gt[valid], cur_cls[valid]
            per_class = []
            for anchor_class_name, anchors in zip(self.anchor_class_names, all_anchors):
                cls_idx = int(np.where(self.class_names == anchor_class_name)[0][0]) + 1
                mask = cur_cls == cls_idx
                feature_map_size = anchors.shape[1:3]
                flat = anchors.view(-1, anchors.shape[-1])
                res = self.assign_targets_single(
                    flat,
                    cur_gt[mask],
                    cur_cls[mask],
                    self.matched_thresholds[anchor_class_name],
                    self.unmatched_thresholds[anchor_class_name],
                )
                per_class.append({key: val.view(*feature_map_size, -1, *val.shape[1:]) for key, val in res.items()})
            labels_b.append(torch.cat([r["box_cls_labels"] for r in per_class], dim=2).reshape(-1))
            targets_b.append(
                torch.cat([r["box_reg_targets"] for r in per_class], dim=2).reshape(-1, self.box_coder.code_size)
            )
            weights_b.append(torch.cat([r["reg_weights"] for r in per_class], dim=2).reshape(-1))
        return {
            "box_cls_labels": torch.stack(labels_b, dim=0),
            "box_reg_targets": torch.stack(targets_b, dim=0),
            "reg_weights": torch.stack(weights_b, dim=0),
        }

    def assign_targets_single(self, anchors, gt_boxes, gt_classes, matched_threshold, unmatched_threshold):
        num_anchors = anchors.shape[0]
        labels = torch.full((num_anchors,), -1, dtype=torch.int32, device=anchors.device)
        gt_ids = torch.full((num_anchors,), -1, dtype=torch.int64, device=anchors.device)
        if gt_boxes.shape[0] > 0 and num_anchors > 0:
            overlap = boxes3d_nearest_bev_iou(anchors[:, 0:7], gt_boxes[:, 0:7])  # (A, G)
            a2g_max, a2g_arg = overlap.max(dim=1)
            g2a_max = overlap.max(dim=0)[0]
            g2a_max = torch.where(g2a_max == 0, torch.full_like(g2a_max, -1.0), g2a_max)
            force_anchor, force_gt = (overlap == g2a_max[None, :]).nonzero(as_tuple=True)
            labels[force_anchor] = gt_classes[force_gt].int()
            gt_ids[force_anchor] = force_gt
            pos = a2g_max >= matched_threshold
            labels[pos] = gt_classes[a2g_arg[pos]].int()
            gt_ids[pos] = a2g_arg[pos]
            labels[a2g_max < unmatched_threshold] = 0
            labels[force_anchor] = gt_classes[force_gt].int()
            gt_ids[force_anchor] = force_gt
        else:
            labels[:] = 0
        fg = labels > 0
        targets = anchors.new_zeros((num_anchors, self.box_coder.code_size))
        if fg.any():
            targets[fg] = self.box_coder.encode_torch(gt_boxes[gt_ids[fg], :7], anchors[fg])
        reg_weights = anchors.new_zeros((num_anchors,))
        if self.norm_by_num_examples:
            reg_weights[fg] = 1.0 / max(int(fg.sum()), 1)
        else:
            reg_weights[fg] = 1.0
        return {"box_cls_labels": labels, "box_reg_targets": targets, "reg_weights": reg_weights}
