"""SparseKD: heat-map logit KD + box regression toward the teacher + label KD with teacher boxes.

Source: Yang et al., "Towards Efficient 3D Object Detection with Knowledge Distillation" (SparseKD),
NeurIPS 2022. Applied to: the anchor head's class and box maps (the paper's heat-map loss, applied
to the anchor class map). Loss implemented:
  hm = sigmoid(class map) per anchor and class, (B, ny, nx, A, C);
  mask = max_c hm_T  x  fg, fg = the BEV cell's centre lies inside a ground-truth box (the anchor head
  has no Gaussian heat-map targets; the inside-a-box region is their analogue, a choice);
  L_logit = sum(mask * sum_c (hm_S - hm_T)^2) / sum(mask)          (``LOGIT_WEIGHT``, published 10);
  L_box = sum(mask * sum_k smoothL1(r_S - r_T)) / sum(mask), r = the head's encoded box residuals at the
  same anchor (``BOX_WEIGHT``, published 0.2);
  label KD (``LABEL_KD``, on by default): before the student's forward, teacher boxes with best class
  score >= ``LABEL_SCORE_THRESH`` (0.6), after rotated BEV NMS (the ``NMS_PRE_MAXSIZE`` best, 4096, enter
  it, as in the detectors' post-processing), that overlap no ground-truth box
  (BEV IoU <= ``LABEL_DEDUP_IOU``, a choice) are appended to ``gt_boxes`` with the teacher's class,
  so the student's own target assignment trains on them. Feature KD off, as published.
  L = WEIGHT * (LOGIT_WEIGHT L_logit + BOX_WEIGHT L_box).
The teacher's boxes come from ``batch_box_preds_tea`` / ``batch_cls_preds_tea`` (the wrapper records them).
"""
import torch
import torch.nn.functional as F

from pcdet.kd.methods.base import KD_METHODS, KDMethod
from pcdet.kd.keys import TEA
from pcdet.kd.methods.common import NMS_PRE_MAXSIZE, confident_boxes, gt_bev_masks, head_view, point_cloud_range_of, valid_gt
from pcdet.ops.iou3d_nms import boxes_bev_iou


def teacher_label_boxes(cls_t, box_t, gt_boxes_b, score_thresh, nms_thresh, dedup_iou, max_boxes=100,
                        pre_max=NMS_PRE_MAXSIZE):
    """(K, 8) teacher boxes (x..heading, class 1..C) to add to one sample's ground truth."""
    idx, _ = confident_boxes(cls_t, box_t, score_thresh, nms_thresh, max_boxes, pre_max)
    if idx.numel() == 0:
        return box_t.new_zeros((0, 8))
    label = cls_t.float().argmax(dim=-1)
    boxes = box_t[idx].float()
    gt = valid_gt(gt_boxes_b)
    if gt.shape[0] > 0 and boxes.shape[0] > 0:
        iou = boxes_bev_iou(boxes.detach(), gt[:, :7].float())  # on the boxes' device
        fresh = iou.max(dim=1).values <= dedup_iou
        boxes, idx = boxes[fresh], idx[fresh]
    return torch.cat([boxes[:, :7], (label[idx] + 1).to(boxes.dtype)[:, None]], dim=1)


@KD_METHODS.register()
class SparseKD(KDMethod):
    """SparseKD (Yang et al.): masked heat-map MSE + box regression to teacher + teacher boxes as extra labels."""

    ALLOWED_KEYS = {"NAME", "WEIGHT", "LOGIT_WEIGHT", "BOX_WEIGHT", "LABEL_KD", "LABEL_SCORE_THRESH", "NMS_THRESH",
                    "LABEL_DEDUP_IOU", "SMOOTH_L1_BETA", "NMS_PRE_MAXSIZE"}

    def __init__(self, cfg, student, teacher, where):
        super().__init__(cfg, where)
        self.view_s, self.view_t = head_view(student, where), head_view(teacher, where)
        self.pcr = point_cloud_range_of(student)
        self.logit_weight = float(cfg.get("LOGIT_WEIGHT", 10.0))
        self.box_weight = float(cfg.get("BOX_WEIGHT", 0.2))
        self.label_kd = bool(cfg.get("LABEL_KD", True))
        self.label_thresh = float(cfg.get("LABEL_SCORE_THRESH", 0.6))
        self.nms_thresh = float(cfg.get("NMS_THRESH", 0.1))
        self.dedup_iou = float(cfg.get("LABEL_DEDUP_IOU", 0.1))
        self.pre_max = int(cfg.get("NMS_PRE_MAXSIZE", NMS_PRE_MAXSIZE))
        self.beta = float(cfg.get("SMOOTH_L1_BETA", 1.0 / 9.0))
        self.last_label_kd_boxes = 0  # boxes label KD added to the current batch (for the logs)

    def prepare_student_inputs(self, batch_dict):
        """Label KD: append confident teacher boxes to ``gt_boxes`` before the student assigns targets."""
        if not self.label_kd or "gt_boxes" not in batch_dict:
            return batch_dict
        gt = batch_dict["gt_boxes"]
        vt = self.view_t(batch_dict, TEA, decode=True)
        cls_t, box_t = vt["cls_flat"].detach(), vt["boxes"].detach()
        rows, added = [], 0
        for b in range(gt.shape[0]):
            extra = teacher_label_boxes(cls_t[b], box_t[b], gt[b], self.label_thresh, self.nms_thresh, self.dedup_iou,
                                        pre_max=self.pre_max)
            rows.append(torch.cat([valid_gt(gt[b]).float(), extra.to(gt.device)], dim=0))
            added += int(extra.shape[0])
        m = max(max(r.shape[0] for r in rows), 1)
        out = gt.new_zeros((gt.shape[0], m, gt.shape[2]))
        for b, r in enumerate(rows):
            out[b, : r.shape[0]] = r.to(out.dtype)
        batch_dict["gt_boxes"] = out
        self.last_label_kd_boxes = added
        return batch_dict

    def forward(self, batch_dict):
        vs, vt = self.view_s(batch_dict), self.view_t(batch_dict, TEA)
        zs, rs = vs["cls"], vs["box"]
        zt, rt = vt["cls"].detach(), vt["box"].detach()
        b, h, w = zs.shape[:3]
        fg = (gt_bev_masks(batch_dict["gt_boxes"], h, w, self.pcr)[0] >= 0).to(zs.dtype)
        hm_s, hm_t = torch.sigmoid(zs), torch.sigmoid(zt)
        mask = hm_t.max(dim=-1).values * fg[..., None]  # (B, H, W, A)
        norm = mask.sum().clamp(min=1e-6)
        l_logit = (mask * ((hm_s - hm_t) ** 2).sum(-1)).sum() / norm
        l_box = (mask * F.smooth_l1_loss(rs, rt, beta=self.beta, reduction="none").sum(-1)).sum() / norm
        loss = self.logit_weight * l_logit + self.box_weight * l_box
        tb = {"logit": float(l_logit.detach()), "box": float(l_box.detach()),
              "label_kd_boxes": self.last_label_kd_boxes}
        return self.weight * loss, tb
