"""SESSDConsistency: SE-SSD's box and score consistency between teacher and student predictions.

Source: Zheng et al., "SE-SSD: Self-Ensembling Single-Stage Object Detector from Point Cloud", CVPR 2021
(there the teacher is an EMA of the student; here it is the frozen large teacher).
Applied to: the anchor head's decoded boxes and class scores.
Loss implemented (details as described in the paper; no released code confirms them), per sample:
  teacher boxes: the teacher's decoded anchor predictions (``batch_box_preds_tea``, ``batch_cls_preds_tea``)
  whose best class score sigmoid >= ``SCORE_THRESH`` (0.3), reduced by rotated BEV NMS (``NMS_THRESH``; the
  ``NMS_PRE_MAXSIZE`` best, 4096, enter it, as in the detectors' post-processing);
  student boxes: the student's decoded predictions *at the same confident anchors* (decoded with the
  student's own head, before any NMS) -- a choice: SE-SSD filters the student by its own scores, which a
  freshly initialised student never passes, so its loss would be zero for most of a short schedule;
  each student box is matched to the teacher box of largest BEV IoU and kept if IoU > ``IOU_THRESH`` (0.7);
  L_box = mean over pairs of sum_{x,y,z,dx,dy,dz} smoothL1(b_S - b_T) + smoothL1(sin(theta_S - theta_T));
  L_cls = mean over pairs of sum_c smoothL1(sigmoid(z_S) - sigmoid(z_T));
  L = WEIGHT * (L_box + L_cls)  (smooth-L1 with beta = ``SMOOTH_L1_BETA``, default 1/9).
"""
import torch
import torch.nn.functional as F

from pcdet.kd.methods.base import KD_METHODS, KDMethod
from pcdet.kd.keys import TEA
from pcdet.kd.methods.common import NMS_PRE_MAXSIZE, confident_boxes, head_view
from pcdet.ops.iou3d_nms import boxes_bev_iou


@KD_METHODS.register()
class SESSDConsistency(KDMethod):
    """SE-SSD consistency: smooth-L1 on boxes and sigmoid scores of student boxes matched (IoU>0.7) to teacher boxes."""

    ALLOWED_KEYS = {"NAME", "WEIGHT", "SCORE_THRESH", "NMS_THRESH", "IOU_THRESH", "MAX_TEACHER_BOXES", "SMOOTH_L1_BETA",
                    "NMS_PRE_MAXSIZE"}

    def __init__(self, cfg, student, teacher, where):
        super().__init__(cfg, where)
        self.view_s, self.view_t = head_view(student, where), head_view(teacher, where)
        self.score_thresh = float(cfg.get("SCORE_THRESH", 0.3))
        self.nms_thresh = float(cfg.get("NMS_THRESH", 0.1))
        self.iou_thresh = float(cfg.get("IOU_THRESH", 0.7))
        self.max_boxes = int(cfg.get("MAX_TEACHER_BOXES", 100))
        self.pre_max = int(cfg.get("NMS_PRE_MAXSIZE", NMS_PRE_MAXSIZE))
        self.beta = float(cfg.get("SMOOTH_L1_BETA", 1.0 / 9.0))

    def forward(self, batch_dict):
        bs = int(batch_dict["batch_size"])
        vs, vt = self.view_s(batch_dict, decode=True), self.view_t(batch_dict, TEA, decode=True)
        cls_s, box_s = vs["cls_flat"], vs["boxes"]
        cls_t, box_t = vt["cls_flat"].detach().float(), vt["boxes"].detach().float()
        box_s, cls_s = box_s.float(), cls_s.float()
        box_terms, cls_terms, pairs = [], [], 0
        for b in range(bs):
            t_idx, score = confident_boxes(cls_t[b], box_t[b], self.score_thresh, self.nms_thresh, self.max_boxes,
                                           self.pre_max)
            if t_idx.numel() == 0:
                continue
            cand = torch.nonzero(score >= self.score_thresh).squeeze(1)  # the student's boxes at these anchors
            iou = boxes_bev_iou(box_s[b, cand].detach(), box_t[b, t_idx])  # on the boxes' device
            best_iou, best = iou.max(dim=1)
            ok = best_iou > self.iou_thresh
            if not bool(ok.any()):
                continue
            s_idx, m_idx = cand[ok], t_idx[best[ok]]
            bs_, bt_ = box_s[b, s_idx], box_t[b, m_idx]
            reg = F.smooth_l1_loss(bs_[:, :6], bt_[:, :6], beta=self.beta, reduction="none").sum(1)
            reg = reg + F.smooth_l1_loss(torch.sin(bs_[:, 6] - bt_[:, 6]), torch.zeros_like(bs_[:, 6]),
                                         beta=self.beta, reduction="none")
            cls = F.smooth_l1_loss(torch.sigmoid(cls_s[b, s_idx]), torch.sigmoid(cls_t[b, m_idx]), beta=self.beta,
                                   reduction="none").sum(1)
            box_terms.append(reg)
            cls_terms.append(cls)
            pairs += int(s_idx.numel())
        if pairs == 0:
            return self.weight * self.zero_loss(batch_dict["cls_preds"], batch_dict["box_preds"]), {"pairs": 0}
        l_box = torch.cat(box_terms).mean()
        l_cls = torch.cat(cls_terms).mean()
        return self.weight * (l_box + l_cls), {"pairs": pairs, "box": float(l_box.detach()), "cls": float(l_cls.detach())}
