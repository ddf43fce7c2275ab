"""ZhangMa: attention-guided feature distillation + attention transfer + non-local relation distillation.

Source: Zhang & Ma, "Improve Object Detection with Feature-based Knowledge Distillation: Towards
Accurate and Efficient Detectors", ICLR 2021.
Loss implemented on a (B, C, H, W) map (student map first mapped to C_T by a 1x1 conv adapter):
  A_S(F) = H W softmax_hw(mean_c |F| / T),  A_C(F) = C softmax_c(mean_hw |F| / T),  T = ``TEMPERATURE``;
  L_feat = ALPHA * sum(((F_T - a(F_S))^2) * A_S(F_T) * A_C(F_T)) / B;
  L_at   = BETA * (sum|A_S(F_T) - A_S(a(F_S))| + sum|A_C(F_T) - A_C(a(F_S))|) / B;
  L_nl   = GAMMA * sum((NL_T(F_T) - NL_S(a(F_S)))^2) / B, NL = an embedded-Gaussian non-local block
  (theta/phi/g 1x1 convs to C_T / 2, output 1x1 conv back to C_T, residual), one per side, trained by
  this loss (the teacher's block sees the detached teacher map);
  L = WEIGHT * (L_feat + L_at + L_nl).
Published (not checked against the authors' code): T = 0.1 (0.5 in a variant), alpha = gamma = 7e-5, beta = 4e-3.
Applied to: ``FEATURE`` (default ``spatial_features_2d``). Choice the paper leaves open for a BEV map:
the non-local relation over H x W positions (tens of thousands) is computed on the map average-pooled
to at most ``NL_MAX_SIZE`` (default 32) cells per side. The foreground/background split of the
paper's feature loss is not used (one sum over the map, attention-weighted).
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from pcdet.kd.methods.base import KD_METHODS, KDMethod
from pcdet.kd.methods.common import Adapter1x1, student_map, teacher_map
from pcdet.kd.nodes import feature_channels


def spatial_attention(feat, temperature):
    b, _, h, w = feat.shape
    return (h * w * torch.softmax(feat.abs().mean(dim=1).flatten(1) / temperature, dim=1)).view(b, 1, h, w)


def channel_attention(feat, temperature):
    b, c = feat.shape[:2]
    return (c * torch.softmax(feat.abs().mean(dim=(2, 3)) / temperature, dim=1)).view(b, c, 1, 1)


class NonLocalBlock(nn.Module):
    """Embedded-Gaussian non-local block (Wang et al. 2018): x + W(softmax(theta(x)^T phi(x)) g(x))."""

    def __init__(self, channels):
        super().__init__()
        inter = max(channels // 2, 1)
        self.theta = nn.Conv2d(channels, inter, 1)
        self.phi = nn.Conv2d(channels, inter, 1)
        self.g = nn.Conv2d(channels, inter, 1)
        self.out = nn.Conv2d(inter, channels, 1)

    def forward(self, x):
        b, _, h, w = x.shape
        q = self.theta(x).flatten(2).transpose(1, 2)  # (B, HW, C')
        k = self.phi(x).flatten(2)  # (B, C', HW)
        v = self.g(x).flatten(2).transpose(1, 2)  # (B, HW, C')
        y = torch.softmax(q @ k, dim=-1) @ v
        return x + self.out(y.transpose(1, 2).reshape(b, -1, h, w))


@KD_METHODS.register()
class ZhangMa(KDMethod):
    """Zhang & Ma ICLR'21: attention-guided feature loss + attention L1 + non-local relation loss."""

    ALLOWED_KEYS = {"NAME", "WEIGHT", "FEATURE", "TEACHER_FEATURE", "TEMPERATURE", "ALPHA", "BETA", "GAMMA", "NL_MAX_SIZE"}

    def __init__(self, cfg, student, teacher, where):
        super().__init__(cfg, where)
        self.feature, self.teacher_feature = self.feature_keys(cfg, default="spatial_features_2d")
        self.temperature = float(cfg.get("TEMPERATURE", 0.1))
        self.alpha = float(cfg.get("ALPHA", 7e-5))
        self.beta = float(cfg.get("BETA", 4e-3))
        self.gamma = float(cfg.get("GAMMA", 7e-5))
        self.nl_max = int(cfg.get("NL_MAX_SIZE", 32))
        c_t = feature_channels(teacher, self.teacher_feature)
        self.adapter = Adapter1x1(feature_channels(student, self.feature), c_t, bias=True)
        self.nl_s = NonLocalBlock(c_t)
        self.nl_t = NonLocalBlock(c_t)

    def _pool(self, x):
        h, w = x.shape[2:]
        if max(h, w) <= self.nl_max:
            return x
        return F.adaptive_avg_pool2d(x, (min(h, self.nl_max), min(w, self.nl_max)))

    def forward(self, batch_dict):
        fs = self.adapter(student_map(batch_dict, self.feature))
        ft = teacher_map(batch_dict, self.teacher_feature, fs)
        b, t = fs.shape[0], self.temperature
        sa_t, ca_t = spatial_attention(ft, t), channel_attention(ft, t)
        sa_s, ca_s = spatial_attention(fs, t), channel_attention(fs, t)
        l_feat = ((ft - fs) ** 2 * sa_t * ca_t).sum() / b
        l_at = ((sa_t - sa_s).abs().sum() + (ca_t - ca_s).abs().sum()) / b
        l_nl = ((self.nl_t(self._pool(ft)) - self.nl_s(self._pool(fs))) ** 2).sum() / b
        loss = self.alpha * l_feat + self.beta * l_at + self.gamma * l_nl
        tb = {"feat": float(l_feat.detach()), "at": float(l_at.detach()), "nl": float(l_nl.detach())}
        return self.weight * loss, tb
