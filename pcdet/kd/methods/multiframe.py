"""MultiFrameConsistency: BEV feature consistency between a teacher and a single-frame student.

Source: Wang et al., "Multi-Frame to Single-Frame: Knowledge Distillation for 3D Object Detection"
(2020). There the teacher sees dense multi-frame point clouds and an identical-architecture student
sees single frames, and the student's intermediate features are pulled to the teacher's.
Loss implemented (the paper's exact form is not confirmed by released code): L = WEIGHT * mean(|a(F_S) - F_T|^p),
p = 2 (``LOSS: l2``, default) or 1 (``LOSS: l1``), a = 1x1 conv adapter C_S -> C_T (identity-free
because the compressed student is narrower than the teacher).
Applied to: the BEV map ``FEATURE`` (default ``spatial_features_2d``). In this project's same-input
compression setting (teacher and student both see the single frame) the method reduces to feature
consistency on the BEV map; no multi-frame teacher input exists here.
"""
from pcdet.kd.methods.base import KD_METHODS, KDMethod
from pcdet.kd.methods.common import Adapter1x1, student_map, teacher_map
from pcdet.kd.nodes import feature_channels


@KD_METHODS.register()
class MultiFrameConsistency(KDMethod):
    """Multi-frame-to-single-frame consistency (Wang et al.): L2/L1 between adapted student and teacher BEV maps."""

    ALLOWED_KEYS = {"NAME", "WEIGHT", "FEATURE", "TEACHER_FEATURE", "LOSS"}

    def __init__(self, cfg, student, teacher, where):
        super().__init__(cfg, where)
        self.feature, self.teacher_feature = self.feature_keys(cfg, default="spatial_features_2d")
        self.p = {"l2": 2, "l1": 1}.get(str(cfg.get("LOSS", "l2")).lower())
        if self.p is None:
            raise ValueError(f"{where}: LOSS must be l2 or l1, got {cfg.get('LOSS')!r}")
        self.adapter = Adapter1x1(feature_channels(student, self.feature), feature_channels(teacher, self.teacher_feature),
                                  bias=True)

    def forward(self, batch_dict):
        fs = student_map(batch_dict, self.feature)
        ft = teacher_map(batch_dict, self.teacher_feature, fs)
        diff = (self.adapter(fs) - ft).abs()
        return self.weight * (diff.pow(self.p) if self.p != 1 else diff).mean(), {}
