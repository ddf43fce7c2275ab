"""FitNet: hint regression from a student feature map to the teacher's.

Source: Romero et al., "FitNets: Hints for Thin Deep Nets", ICLR 2015.
Loss implemented: L = WEIGHT * mean((r(F_S) - F_T)^2), regressor r = conv1x1 (C_S -> C_T, no bias)
+ BatchNorm + ReLU (the reference code's regressor; the ReLU matches the teacher's post-ReLU maps).
Applied to: ``FEATURE`` (default ``spatial_features_2d``, the BEV backbone output; the paper's hint is a
middle layer, the BEV backbone output is the detector's widest shared representation); the teacher's
``TEACHER_FEATURE`` (default the same key) must have the same resolution. The reference weight is 100
on image classification; the configs rescale it (see kd_cfgs) so that it does not swamp the task loss.
"""
import torch.nn.functional as F

from pcdet.kd.methods.base import KD_METHODS, KDMethod
from pcdet.kd.methods.common import Adapter1x1, student_map, teacher_map
from pcdet.kd.nodes import feature_channels


@KD_METHODS.register()
class FitNet(KDMethod):
    """FitNet: MSE(conv1x1+BN+ReLU regressor(student map), teacher map) on a BEV feature map."""

    ALLOWED_KEYS = {"NAME", "WEIGHT", "FEATURE", "TEACHER_FEATURE"}

    def __init__(self, cfg, student, teacher, where):
        super().__init__(cfg, where)
        self.feature, self.teacher_feature = self.feature_keys(cfg, default="spatial_features_2d")
        self.regressor = Adapter1x1(feature_channels(student, self.feature), feature_channels(teacher, self.teacher_feature),
                                    bn=True, relu=True)

    def forward(self, batch_dict):
        fs = student_map(batch_dict, self.feature)
        ft = teacher_map(batch_dict, self.teacher_feature, fs)
        return self.weight * F.mse_loss(self.regressor(fs), ft), {}
