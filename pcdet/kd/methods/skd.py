"""SKD: structured KD of a segmentor: pixel-wise (point-wise) soft cross-entropy + pair-wise similarity of pooled nodes.

Source: Liu et al., "Structured Knowledge Distillation for Semantic Segmentation", CVPR 2019; one of the
segmentation baselines of PVD (Hou et al., CVPR 2022, Tables 1-3: "SKD takes the output probability
maps and pairwise similarity maps as mimicking targets", the holistic GAN term removed). Reference
code: irfanICMLL/structure_knowledge_distillation (``CriterionPixelWise``, ``CriterionPairWiseforWholeFeatAfterPool``
with ``sim_dis_compute``; ``lambda-pi`` 10, ``lambda-pa`` 1, ``pool-scale`` 0.5).
Applied to: a segmentor's point logits and voxel features (keys below), teacher and student on the
same voxels. Loss implemented: L = WEIGHT * (PIXEL_WEIGHT * L_pi + PAIR_WEIGHT * L_pa) with
  * L_pi = sum_n sum_c -p_t(n, c) log p_s(n, c) / (N / B): the reference sums over the batch and divides
    by the pixels of one image; here the points of the batch over the mean points per scan. On
    ``OUTPUT`` (default ``point_refine_logits``, the pointwise output PVD's eq. 1 distils too; with
    Cylinder3D's ``PREDICT_FROM: voxel`` ``point_logits`` would be each point's voxel logits), softmax
    over the classes;
  * L_pa: ``FEATURE`` (default ``decoder_features``, the encoder-decoder output) max-pooled into the
    cells of a coarse grid whose cell is ceil(POOL_SCALE x grid) voxels per axis (0.5: a 2 x 2 x 2
    grid, the reference's kernel of half the map); nodes = the sample's non-empty coarse cells;
    S = cosine similarity matrix of the node features, with the norms detached as the reference's
    ``similarity`` does (same values, the gradient flows through the numerator only);
    L_pa = mean over samples of sum_ij (S_t - S_s)^2 / n_b^2 (``sim_dis_compute``: / (W H)^2 / N).
Choices: a sparse map's pooling runs over its non-empty voxels (a dense map's over all pixels, zeros
included); the pair-wise term is channel-free, so teacher and student widths may differ.
"""
import math

import torch
import torch.nn.functional as F

from pcdet.config import ConfigError
from pcdet.kd.keys import tea
from pcdet.kd.methods.base import KD_METHODS, KDMethod
from pcdet.kd.methods.common import student_map
from pcdet.kd.nodes import full_precision


def pixel_wise(logit_s, logit_t, batch_size):
    """sum_n sum_c -softmax(t) log softmax(s) / (N / B)."""
    if logit_s.shape[0] == 0:
        return logit_s.sum() * 0.0
    ce = -(F.softmax(logit_t, dim=1) * F.log_softmax(logit_s, dim=1)).sum()
    return ce / (logit_s.shape[0] / batch_size)


def pooled_nodes(feat, coords, cell):
    """``(features (n, C), sample of each node (n,))``: max of ``feat`` over the voxels of each non-empty
    coarse cell (``cell`` voxels per axis) of each sample."""
    c = coords.long()
    key = torch.stack([c[:, 0]] + [c[:, 1 + d] // int(cell[d]) for d in range(3)], dim=1)
    uniq, inverse = torch.unique(key, dim=0, return_inverse=True)
    out = feat.new_full((uniq.shape[0], feat.shape[1]), float("-inf"))
    out = out.scatter_reduce(0, inverse[:, None].expand_as(feat), feat, reduce="amax", include_self=True)
    return out, uniq[:, 0]


def similarity(feat):
    """(n, n) cosine similarities of the rows with the norms detached (the reference's ``similarity``)."""
    f = feat / (feat.norm(dim=1, keepdim=True).detach() + 1e-8)
    return f @ f.t()


def pair_wise(feat_s, feat_t, coords, cell, batch_size):
    ns, node_b = pooled_nodes(feat_s, coords, cell)
    nt, _ = pooled_nodes(feat_t, coords, cell)
    total, counted = feat_s.sum() * 0.0, 0
    for b in range(batch_size):
        sel = node_b == b
        n = int(sel.sum())
        if n == 0:
            continue
        total = total + (similarity(nt[sel]) - similarity(ns[sel])).pow(2).sum() / (n * n)
        counted += 1
    return total / max(counted, 1)


@KD_METHODS.register()
class SKD(KDMethod):
    """SKD (Liu et al.): point-wise soft cross-entropy + pair-wise cosine similarity of max-pooled node features."""

    ALLOWED_KEYS = {"NAME", "WEIGHT", "OUTPUT", "FEATURE", "PIXEL_WEIGHT", "PAIR_WEIGHT", "POOL_SCALE"}

    def __init__(self, cfg, student, teacher, where):
        super().__init__(cfg, where)
        self.require_segmentor(student, where, "SKD distils a segmentor")
        self.output = str(cfg.get("OUTPUT", "point_refine_logits"))
        self.feature = str(cfg.get("FEATURE", "decoder_features"))
        self.pixel_weight = float(cfg.get("PIXEL_WEIGHT", 10.0))
        self.pair_weight = float(cfg.get("PAIR_WEIGHT", 1.0))
        scale = float(cfg.get("POOL_SCALE", 0.5))
        if not 0.0 < scale <= 1.0:
            raise ConfigError(f"{where}: POOL_SCALE must be in (0, 1], got {scale}")
        grid = [int(g) for g in student.dataset.data_processor.grid_size]
        self.cell = [max(1, math.ceil(g * scale)) for g in grid]

    def forward(self, batch_dict):
        bs = int(batch_dict["batch_size"])
        zs = student_map(batch_dict, self.output)
        zt = full_precision(batch_dict[tea(self.output)].detach())
        fs = student_map(batch_dict, self.feature)
        ft = full_precision(batch_dict[tea(self.feature)].detach())
        if zs.shape != zt.shape or fs.shape[0] != ft.shape[0]:
            raise ValueError(f"{self.where}: teacher and student rows differ ({self.output} {tuple(zs.shape)} vs "
                             f"{tuple(zt.shape)}, {self.feature} {fs.shape[0]} vs {ft.shape[0]})")
        l_pi = pixel_wise(zs, zt, bs)
        l_pa = pair_wise(fs, ft, batch_dict["voxel_coords"], self.cell, bs)
        loss = self.pixel_weight * l_pi + self.pair_weight * l_pa
        return self.weight * loss, {"pixel_wise": float(l_pi.detach()), "pair_wise": float(l_pa.detach())}
