"""Overhaul: pre-ReLU feature distillation with the teacher's BN-derived margins and a partial L2.

Source: Heo et al., "A Comprehensive Overhaul of Feature Distillation", ICCV 2019.
Loss implemented, per distilled stage i of n (stage weight 1 / 2^(n - i - 1), the deepest weighs 1):
  connector r_i = conv1x1 (C_S -> C_T, no bias) + BN on the student's pre-ReLU map;
  per teacher channel, with s = |gamma| and m = beta of the teacher BN feeding that ReLU:
    margin = m - s * pdf(m / s) / cdf(-m / s)   if cdf(-m / s) > 1e-3, else -3 s
  (the expectation of the negative part of N(m, s^2)); target t = max(F_T, margin);
  partial L2 = sum((r(F_S) - t)^2 * [(r(F_S) > t) or (t > 0)]);
  L = WEIGHT * sum_i w_i * partial_L2_i / B.
Applied to: the PointPillars BEV backbone stages' pre-activations ``spatial_features_<s>x_preact``
(written by ``BaseBEVBackbone``; teacher: ``*_preact_tea``), ``STRIDES`` default all stages. The
reference code divides the summed loss by the batch size and 1000 (CIFAR) or 10000 (ImageNet);
``WEIGHT`` plays that role here (the configs state the value used).
Teacher BN statistics come from the teacher the wrapper hands to the method at construction (frozen,
already loaded), kept as a non-persistent buffer: they are a function of the teacher alone.
"""
import math

import torch

from pcdet.kd.methods.base import KD_METHODS, KDMethod
from pcdet.kd.methods.common import Adapter1x1, student_map, teacher_map
from pcdet.kd.nodes import feature_channels


def bn_margin(gamma, beta):
    """Per-channel margin of Heo et al. from a BN's weight (gamma) and bias (beta)."""
    s = gamma.detach().double().abs().clamp(min=1e-12)
    m = beta.detach().double()
    cdf = torch.special.ndtr(-m / s)
    pdf = torch.exp(-0.5 * (m / s) ** 2) / math.sqrt(2 * math.pi)
    margin = torch.where(cdf > 1e-3, m - s * pdf / cdf.clamp(min=1e-300), -3 * s)
    return margin.float()


def partial_l2(pred, target):
    """sum((pred - target)^2 where pred > target or target > 0)."""
    mask = ((pred > target) | (target > 0)).to(pred.dtype)
    return ((pred - target) ** 2 * mask).sum()


@KD_METHODS.register()
class Overhaul(KDMethod):
    """Overhaul (Heo): connector(student pre-ReLU) vs max(teacher pre-ReLU, BN margin), partial L2, stage weights."""

    ALLOWED_KEYS = {"NAME", "WEIGHT", "STRIDES"}

    def __init__(self, cfg, student, teacher, where):
        super().__init__(cfg, where)
        bb_t = getattr(teacher, "backbone_2d", None)
        if bb_t is None or not hasattr(bb_t, "stage_output_bn"):
            raise ValueError(f"{where}: Overhaul needs a BEV backbone with Conv-BN-ReLU stages (BaseBEVBackbone)")
        strides = list(cfg.get("STRIDES", None) or bb_t.cum_strides)
        unknown = [s for s in strides if s not in bb_t.cum_strides]
        if unknown:
            raise ValueError(f"{where}: STRIDES {unknown} are not stages of the teacher (strides {bb_t.cum_strides})")
        self.keys = [f"spatial_features_{s}x_preact" for s in strides]
        n = len(strides)
        self.stage_weights = [1.0 / 2 ** (n - i - 1) for i in range(n)]
        self.connectors = torch.nn.ModuleList(
            Adapter1x1(feature_channels(student, k), feature_channels(teacher, k), bn=True) for k in self.keys
        )
        for i, s in enumerate(strides):
            bn = bb_t.stage_output_bn(bb_t.cum_strides.index(s))
            self.register_buffer(f"margin_{i}", bn_margin(bn.weight, bn.bias), persistent=False)

    def forward(self, batch_dict):
        loss, tb = 0.0, {}
        for i, key in enumerate(self.keys):
            fs = student_map(batch_dict, key)
            ft = teacher_map(batch_dict, key, fs)
            margin = getattr(self, f"margin_{i}").view(1, -1, 1, 1)
            target = torch.max(ft, margin)
            loss = loss + self.stage_weights[i] * partial_l2(self.connectors[i](fs), target) / fs.shape[0]
        return self.weight * loss, tb
