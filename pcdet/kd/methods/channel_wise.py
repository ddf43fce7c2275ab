"""ChannelWise: channel-wise distillation (CD) of a segmentor's voxel logits, softmax over each sample's voxels.

Source: Shu et al., "Channel-wise Knowledge Distillation for Dense Prediction", ICCV 2021; one of the
segmentation baselines of PVD (Hou et al., CVPR 2022, Tables 1-3: "CD utilizes the intermediate
feature maps and score maps as knowledge"). Reference code: irfanICMLL/TorchDistiller SemSeg-distill
(``exp_cwd.sh channel kl 3 4``: the score map, T = 4, weight 3); mmrazor ``losses/cwd.py`` has the
same form.
Loss implemented: for each sample b and channel c, phi(y)_{c, i} = softmax over the sample's V_b
non-empty voxels i of y_{i, c} / T; L = WEIGHT * T^2 / (B C) * sum_b sum_c sum_i phi_t log(phi_t / phi_s).
Applied to: ``FEATURE`` (default ``voxel_logits``, (V, C) rows of ``voxel_coords``) against the
teacher's (same voxelisation: rows align). Choices: a sparse network's "spatial locations" are its
non-empty voxels (an image's are all its pixels); the optional feature-map term of CD is not used
(PVD's tables use the score maps; the reference script's default).
"""
import torch.nn.functional as F

from pcdet.kd.keys import tea
from pcdet.kd.methods.base import KD_METHODS, KDMethod
from pcdet.kd.methods.common import student_map
from pcdet.kd.nodes import full_precision


def channel_wise_kl(logit_s, logit_t, batch_idx, batch_size, temperature):
    """T^2 / (B C) sum_b sum_c KL over the rows of sample b of softmax(y_c / T) (teacher as target)."""
    total = logit_s.sum() * 0.0
    for b in range(batch_size):
        sel = batch_idx == b
        if not bool(sel.any()):
            continue
        log_s = F.log_softmax(logit_s[sel] / temperature, dim=0)
        log_t = F.log_softmax(logit_t[sel] / temperature, dim=0)
        total = total + (log_t.exp() * (log_t - log_s)).sum()
    return temperature ** 2 * total / (batch_size * logit_s.shape[1])


@KD_METHODS.register()
class ChannelWise(KDMethod):
    """CD (Shu et al.): T^2 * KL of per-channel softmax over each sample's voxels of teacher and student voxel logits."""

    ALLOWED_KEYS = {"NAME", "WEIGHT", "FEATURE", "TEMPERATURE"}

    def __init__(self, cfg, student, teacher, where):
        super().__init__(cfg, where)
        self.require_segmentor(student, where, "ChannelWise distils a segmentor's voxel logits")
        self.feature = str(cfg.get("FEATURE", "voxel_logits"))
        self.temperature = float(cfg.get("TEMPERATURE", 4.0))

    def forward(self, batch_dict):
        zs = student_map(batch_dict, self.feature)
        zt = full_precision(batch_dict[tea(self.feature)].detach())
        if zs.shape != zt.shape:
            raise ValueError(f"{self.where}: student {self.feature} {tuple(zs.shape)} vs teacher {tuple(zt.shape)} "
                             f"(CD needs the same voxels and classes)")
        batch_idx = batch_dict["voxel_coords"][:, 0].long()
        loss = channel_wise_kl(zs, zt, batch_idx, int(batch_dict["batch_size"]), self.temperature)
        return self.weight * loss, {}
