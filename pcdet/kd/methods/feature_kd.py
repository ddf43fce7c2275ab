"""FeatureKD: plain feature distillation, MSE between the adapted student feature and the teacher's.

The student feature goes through a 1x1 adapter (C_S -> C_T, with bias) and is compared with the
teacher feature at the same place: every node (``N: null``: every BEV cell / pillar) or the same
top-``N`` nodes per sample that PointDistiller would select (``N`` set, ``IMPORTANCE`` as there).
``TEACHER_FEATURE`` (default ``FEATURE``) names the teacher key when it differs, e.g. another
stride level with the same resolution.
loss = WEIGHT * mean((adapter(F_S) - F_T)^2). This is the "plain feature distillation" baseline
against which PointDistiller's cost and benefit are measured.
"""
import torch.nn as nn
import torch.nn.functional as F

from pcdet.kd.methods.base import KD_METHODS, KDMethod
from pcdet.kd.keys import tea
from pcdet.kd.nodes import NodeAlignmentError, feature_spec, full_precision, resolve_importance, sample_nodes


@KD_METHODS.register()
class FeatureKD(KDMethod):
    """Plain feature distillation: MSE(1x1 adapter(student feature), teacher feature), all or top-N nodes."""

    ALLOWED_KEYS = {"NAME", "WEIGHT", "FEATURE", "TEACHER_FEATURE", "N", "IMPORTANCE"}
    REQUIRED_KEYS = ("FEATURE",)

    def __init__(self, cfg, student, teacher, where):
        super().__init__(cfg, where)
        self.feature, self.teacher_feature = self.feature_keys(cfg)
        n = cfg.get("N", None)
        self.n = int(n) if n is not None else None
        self.spec = feature_spec(student, self.feature)
        self.importance = resolve_importance(self.spec, str(cfg.get("IMPORTANCE", "auto")))
        self.c_s = int(self.spec.channels)
        self.c_t = int(feature_spec(teacher, self.teacher_feature).channels)
        self.adapter = nn.Linear(self.c_s, self.c_t)

    def forward(self, batch_dict):
        fs = batch_dict[self.feature]
        if self.n is None and fs.dim() == 4:
            fs = full_precision(fs)
            ft = full_precision(batch_dict[tea(self.teacher_feature)].detach())
            if fs.shape[0] != ft.shape[0] or fs.shape[2:] != ft.shape[2:]:
                raise NodeAlignmentError(f"{self.feature}: student map {tuple(fs.shape)} vs teacher map {tuple(ft.shape)}")
            pred = F.conv2d(fs, self.adapter.weight[:, :, None, None], self.adapter.bias)
            loss = F.mse_loss(pred, ft)
            count = fs.shape[0] * fs.shape[2] * fs.shape[3]
        else:
            nodes = sample_nodes(batch_dict, self.feature, self.n, self.importance, self.teacher_feature,
                                 spec=self.spec)
            count = nodes.num_nodes
            if count == 0:
                return self.weight * self.zero_loss(fs, *self.parameters()), {"nodes": 0}
            loss = F.mse_loss(self.adapter(nodes.feat_s), nodes.feat_t)
        return self.weight * loss, {"nodes": count}
