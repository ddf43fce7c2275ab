"""KnowledgeAdaptation: KA for segmentors: auto-encoded teacher voxel features, an adapted student mimics code and affinity.

Source: He et al., "Knowledge Adaptation for Efficient Semantic Segmentation", CVPR 2019; one of the
segmentation baselines of PVD (Hou et al., CVPR 2022, Tables 1-3: "KA makes the student distil the
compressed knowledge and the affinity information of the whole output from the teacher"). No official
code was found; the loss facts (auto-encoder trained first on teacher features with reconstruction +
1e-7 L1 on the code, then frozen; student adapter conv3x3 + BN + ReLU; adaptation weight 50,
affinity weight 1) are from the paper. The exact forms of the two losses are not verified against
code; the ones below are stated and configurable.
Applied to: ``FEATURE`` (default ``decoder_features``, the encoder-decoder output, (V, C) rows of ``voxel_coords``), teacher and
student on the same voxels. Loss implemented:
  * stage 1 (the first ``AE_STEPS`` training steps): the auto-encoder E = Linear(C_t, D) + ReLU,
    D = Linear(D, C_t) learns ||phi_t - D(E(phi_t))||^2 (mean over voxels and channels)
    + 1e-7 ||E(phi_t)||_1 (mean over voxels, ``AE_L1``) on the teacher's features only; the
    student gets no KD gradient yet. Choice: stage 1 runs inside the student's training (the same
    optimizer, on the first steps) instead of as a separate run; afterwards E and D are frozen
    (``requires_grad`` off). The step count is a buffer, so a resumed run knows where it is.
  * stage 2: the adapter A = Linear(C_s, D) + BN + ReLU (choice: a per-voxel linear map, a 1x1 in
    place of the paper's 3x3) and
    L = WEIGHT * (ADAPT_WEIGHT * mean_i ||n(A(phi_s,i)) - n(E(phi_t,i))||_2^2
                  + AFFINITY_WEIGHT * mean_b mean_ij (cos_s(i, j) - cos_t(i, j))^2),
    n = L2 normalisation per voxel; the affinity (cosine similarity matrix of A(phi_s) and of
    E(phi_t)) over ``AFFINITY_ROWS`` voxels drawn at random per sample (the whole cloud's matrix is
    intractable). D = ``CODE_CHANNELS`` (default: the student's width of ``FEATURE``).
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from pcdet.config import ConfigError
from pcdet.kd.keys import tea
from pcdet.kd.methods.base import KD_METHODS, KDMethod
from pcdet.kd.methods.common import cosine_affinity, student_map
from pcdet.kd.nodes import feature_channels, full_precision


@KD_METHODS.register()
class KnowledgeAdaptation(KDMethod):
    """KA (He et al.): auto-encoder on teacher voxel features (trained first, frozen); adapted student mimics code + affinity."""

    ALLOWED_KEYS = {"NAME", "WEIGHT", "FEATURE", "CODE_CHANNELS", "AE_STEPS", "AE_L1", "ADAPT_WEIGHT",
                    "AFFINITY_WEIGHT", "AFFINITY_ROWS"}

    def __init__(self, cfg, student, teacher, where):
        super().__init__(cfg, where)
        self.require_segmentor(student, where, "KnowledgeAdaptation distils a segmentor's voxel features")
        self.feature = str(cfg.get("FEATURE", "decoder_features"))
        c_s, c_t = feature_channels(student, self.feature), feature_channels(teacher, self.feature)
        code = int(cfg.get("CODE_CHANNELS", None) or c_s)
        self.ae_steps = int(cfg.get("AE_STEPS", 200))
        self.ae_l1 = float(cfg.get("AE_L1", 1e-7))
        self.adapt_weight = float(cfg.get("ADAPT_WEIGHT", 50.0))
        self.affinity_weight = float(cfg.get("AFFINITY_WEIGHT", 1.0))
        self.affinity_rows = int(cfg.get("AFFINITY_ROWS", 2048))
        if min(code, self.affinity_rows) < 1 or self.ae_steps < 0:
            raise ConfigError(f"{where}: CODE_CHANNELS and AFFINITY_ROWS must be positive, AE_STEPS >= 0")
        self.encoder = nn.Sequential(nn.Linear(c_t, code), nn.ReLU())
        self.decoder = nn.Linear(code, c_t)
        self.adapter = nn.Sequential(nn.Linear(c_s, code, bias=False), nn.BatchNorm1d(code), nn.ReLU())
        self.register_buffer("steps_done", torch.zeros((), dtype=torch.long))

    def autoencoder_loss(self, ft):
        code = self.encoder(ft)
        return (self.decoder(code) - ft).pow(2).mean() + self.ae_l1 * code.abs().sum(dim=1).mean()

    def affinity_loss(self, a_s, c_t, batch_idx, batch_size):
        total, counted = a_s.sum() * 0.0, 0
        for b in range(batch_size):
            rows = torch.nonzero(batch_idx == b).squeeze(1)
            if rows.numel() == 0:
                continue
            if rows.numel() > self.affinity_rows:
                rows = rows[torch.randperm(rows.numel(), device=rows.device)[: self.affinity_rows]]
            total = total + (cosine_affinity(a_s[rows]) - cosine_affinity(c_t[rows])).pow(2).mean()
            counted += 1
        return total / max(counted, 1)

    def forward(self, batch_dict):
        fs = student_map(batch_dict, self.feature)
        ft = full_precision(batch_dict[tea(self.feature)].detach())
        if fs.shape[0] != ft.shape[0]:
            raise ValueError(f"{self.where}: {self.feature}: {fs.shape[0]} student vs {ft.shape[0]} teacher voxels")
        if self.training:
            self.steps_done += 1
        if int(self.steps_done) <= self.ae_steps and self.training:
            loss = self.autoencoder_loss(ft)  # stage 1: the auto-encoder alone (no gradient reaches the student)
            return self.weight * loss + fs.sum() * 0.0, {"stage": 1, "reconstruction": float(loss.detach())}
        if self.encoder[0].weight.requires_grad:
            self.encoder.requires_grad_(False)
            self.decoder.requires_grad_(False)
        with torch.no_grad():
            code = self.encoder(ft)
        adapted = self.adapter(fs)
        l_adapt = (F.normalize(adapted, dim=1) - F.normalize(code, dim=1)).pow(2).sum(dim=1).mean()
        l_aff = self.affinity_loss(adapted, code, batch_dict["voxel_coords"][:, 0].long(), int(batch_dict["batch_size"]))
        loss = self.adapt_weight * l_adapt + self.affinity_weight * l_aff
        return self.weight * loss, {"stage": 2, "adaptation": float(l_adapt.detach()), "affinity": float(l_aff.detach())}
