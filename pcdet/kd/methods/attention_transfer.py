"""AttentionTransfer: match normalised spatial attention maps of student and teacher.

Source: Zagoruyko & Komodakis, "Paying More Attention to Attention", ICLR 2017.
Loss implemented: a(F) = l2normalize(vec(mean_c F^2)) per sample (p = 2);
L = WEIGHT * sum_levels mean_{b, hw}((a(F_S) - a(F_T))^2); published weight 1000 (``WEIGHT``).
Applied to: ``FEATURES`` (default the three BEV backbone stage outputs ``spatial_features_2x/4x/8x`` of
PointPillars, the analogue of the paper's residual-group outputs). Channel-free: no adapter, so any
student width works; each student level must have the teacher level's resolution.
"""
import torch.nn.functional as F

from pcdet.kd.methods.base import KD_METHODS, KDMethod
from pcdet.kd.methods.common import student_map, teacher_map


def attention_map(feat):
    """(B, C, H, W) -> (B, H*W): l2-normalised mean over channels of F^2."""
    return F.normalize(feat.pow(2).mean(dim=1).flatten(1), dim=1)


@KD_METHODS.register()
class AttentionTransfer(KDMethod):
    """Attention transfer: mean squared difference of l2-normalised mean_c(F^2) maps, summed over levels."""

    ALLOWED_KEYS = {"NAME", "WEIGHT", "FEATURES"}

    def __init__(self, cfg, student, teacher, where):
        super().__init__(cfg, where)
        self.features = [str(f) for f in (cfg.get("FEATURES", None) or
                                          ["spatial_features_2x", "spatial_features_4x", "spatial_features_8x"])]

    def forward(self, batch_dict):
        loss = 0.0
        for key in self.features:
            fs = student_map(batch_dict, key)
            ft = teacher_map(batch_dict, key, fs)
            loss = loss + (attention_map(fs) - attention_map(ft)).pow(2).mean()
        return self.weight * loss, {}
