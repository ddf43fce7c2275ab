"""PaintAndDistill: class-wise, pixel-wise and instance-wise BEV feature distillation (Ju et al.).

Source: Ju et al., "Paint and Distill: Boosting 3D Object Detection with Semantic Passing Network"
(SPNet), ACM MM 2022. Loss implemented (the paper's forms as described; no released code confirms them).
Applied to: the BEV map ``FEATURE`` (default ``spatial_features_2d``), student map first mapped to C_T by a 1x1
conv adapter a(.), ground truth from ``gt_boxes`` (a cell belongs to a box when its centre is inside it):
  pixel-wise    L_pix  = mean_{b, c, h, w} (a(F_S) - F_T)^2;
  instance-wise L_inst = mean over GT boxes of mean_c (mean_{cells in box} a(F_S) - mean_{cells in box} F_T)^2;
  class-wise    L_cls  = mean over (sample, class present) of mean_c (class-mean a(F_S) - class-mean F_T)^2;
  L = WEIGHT * (PIXEL_WEIGHT L_pix + INSTANCE_WEIGHT L_inst + CLASS_WEIGHT L_cls)  (defaults 1, 1, 1).
What is NOT reproduced: in the paper the teacher sees points *painted* with ground-truth semantics
(a teacher trained on painted input). This project has no painted teacher: the teacher here is the
ordinary PointPillars teacher on the same points, so only the three distillation granularities are
measured, not the semantic passing.
"""
import torch

from pcdet.kd.methods.base import KD_METHODS, KDMethod
from pcdet.kd.methods.common import Adapter1x1, gt_bev_masks, point_cloud_range_of, student_map, teacher_map
from pcdet.kd.nodes import feature_channels


@KD_METHODS.register()
class PaintAndDistill(KDMethod):
    """Paint-and-Distill (Ju et al.) losses: pixel-, instance- (GT box) and class-wise BEV feature matching."""

    ALLOWED_KEYS = {"NAME", "WEIGHT", "FEATURE", "TEACHER_FEATURE", "PIXEL_WEIGHT", "INSTANCE_WEIGHT", "CLASS_WEIGHT"}

    def __init__(self, cfg, student, teacher, where):
        super().__init__(cfg, where)
        self.feature, self.teacher_feature = self.feature_keys(cfg, default="spatial_features_2d")
        self.w_pix = float(cfg.get("PIXEL_WEIGHT", 1.0))
        self.w_inst = float(cfg.get("INSTANCE_WEIGHT", 1.0))
        self.w_cls = float(cfg.get("CLASS_WEIGHT", 1.0))
        self.pcr = point_cloud_range_of(student)
        self.adapter = Adapter1x1(feature_channels(student, self.feature), feature_channels(teacher, self.teacher_feature),
                                  bias=True)

    def forward(self, batch_dict):
        fs = self.adapter(student_map(batch_dict, self.feature))
        ft = teacher_map(batch_dict, self.teacher_feature, fs)
        b, c, h, w = fs.shape
        l_pix = ((fs - ft) ** 2).mean()
        owner, boxes = gt_bev_masks(batch_dict["gt_boxes"], h, w, self.pcr)
        inst_terms, cls_terms = [], []
        for i in range(b):
            n = boxes[i].shape[0]
            if n == 0:
                continue
            own = owner[i].flatten()
            inside = own >= 0
            if not bool(inside.any()):
                continue
            s_cells, t_cells, ids = fs[i].flatten(1)[:, inside].t(), ft[i].flatten(1)[:, inside].t(), own[inside]
            counts = torch.bincount(ids, minlength=n).to(fs.dtype)
            sums_s = fs.new_zeros((n, c)).index_add_(0, ids, s_cells)
            sums_t = fs.new_zeros((n, c)).index_add_(0, ids, t_cells)
            has = counts > 0
            mean_s, mean_t = sums_s[has] / counts[has, None], sums_t[has] / counts[has, None]
            inst_terms.append(((mean_s - mean_t) ** 2).mean(dim=1))
            labels = boxes[i][:, -1].long().to(fs.device)[ids]
            for k in torch.unique(labels).tolist():
                sel = labels == k
                cls_terms.append(((s_cells[sel].mean(0) - t_cells[sel].mean(0)) ** 2).mean().view(1))
        l_inst = torch.cat(inst_terms).mean() if inst_terms else fs.new_zeros(())
        l_cls = torch.cat(cls_terms).mean() if cls_terms else fs.new_zeros(())
        loss = self.w_pix * l_pix + self.w_inst * l_inst + self.w_cls * l_cls
        tb = {"pix": float(l_pix.detach()), "inst": float(l_inst.detach()), "cls": float(l_cls.detach())}
        return self.weight * loss, tb
