"""Helpers shared by the KD methods: dense-head views, sigmoid KL, BEV masks of ground-truth boxes,
cosine affinities, 1x1 adapters.

Head outputs: :func:`head_view` returns the ``kd_view`` of a model's dense head, the
head-independent view of its output (``cls`` (B, ny, nx, A, C) logits, ``box`` (B, ny, nx, A, code),
optionally decoded ``cls_flat`` / ``boxes``); called with ``suffix=TEA`` it reads the teacher's.
BEV masks: :func:`gt_bev_masks` marks the cells of a (B, C, H, W) map whose centre lies inside a
ground-truth box (``gt_boxes`` (B, M, 8): x, y, z, dx, dy, dz, heading, class 1..C; all-zero rows
are padding) and returns, per cell, the index of that box (-1: none).
"""
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from easydict import EasyDict

from pcdet.config import ConfigError
from pcdet.kd.keys import tea
from pcdet.kd.nodes import full_precision
from pcdet.models.model_utils.model_nms_utils import class_agnostic_nms
from pcdet.ops.points_in_boxes import points_in_boxes_index


def head_view(model, where):
    """The ``kd_view(batch_dict, suffix="", decode=False)`` of ``model``'s dense head (a bound method:
    keeping it does not make the head a submodule of the method)."""
    view = getattr(getattr(model, "dense_head", None), "kd_view", None)
    if view is None:
        raise ConfigError(f"{where}: this method distils a dense head's output; {type(model).__name__} has no "
                          f"dense head with kd_view()")
    return view


def sigmoid_kl(logit_s, logit_t, temperature=1.0):
    """Element-wise binary KL(p_t || p_s) with p = sigmoid(z / T) (the per-class KL of a sigmoid head)."""
    zs, zt = logit_s / temperature, logit_t / temperature
    pt = torch.sigmoid(zt)
    # log p = logsigmoid(z), log(1 - p) = logsigmoid(-z): stable for large |z|
    return pt * (F.logsigmoid(zt) - F.logsigmoid(zs)) + (1 - pt) * (F.logsigmoid(-zt) - F.logsigmoid(-zs))


def softmax_kl(logit_s, logit_t, temperature=1.0):
    """1/(M C) sum_m sum_c p_t (log p_t - log p_s) of (M, C) logits, p = softmax(z / T) over C: the mean
    over every element of ``torch.nn.KLDivLoss()`` (its default reduction) with the teacher as target."""
    if logit_s.shape[0] == 0:
        return logit_s.sum() * 0.0
    log_s = F.log_softmax(logit_s / temperature, dim=1)
    log_t = F.log_softmax(logit_t / temperature, dim=1)
    return (log_t.exp() * (log_t - log_s)).sum() / log_s.numel()


def cosine_affinity(feat):
    """(..., N, C) -> (..., N, N) cosine similarities (rows of zeros give zero rows)."""
    f = F.normalize(feat, dim=-1, eps=1e-12)
    return f @ f.transpose(-1, -2)


#: supervoxel sampling strategies of PVD (Hou et al., CVPR 2022): eq. (3) and the three of its Fig. 6
SUPERVOXEL_SAMPLINGS = ("difficulty", "distance", "category", "random")


def supervoxel_weights(n_minor, outer_dist, nonempty, strategy="difficulty"):
    """Sampling weights of N_s supervoxels (PVD, Hou et al. CVPR 2022, section 3.3), 0 for empty ones.

    ``difficulty`` is eq. (3): W_i = 1/f_class * d_i/R * 1/N_s with f_class = 4 exp(-2 N_minor) + 1
    (``n_minor``: minority-class voxels of the supervoxel; ``outer_dist``: d_i, divided by its largest
    value, which is R). Fig. 6's alternatives, whose formulas the paper does not print, keep one factor
    each: ``distance`` W_i = d_i/R * 1/N_s, ``category`` W_i = 1/f_class * 1/N_s, ``random`` W_i = 1/N_s.
    Returns float64 (N_s,); P_i = W_i / sum W (``torch.multinomial`` normalises)."""
    if strategy not in SUPERVOXEL_SAMPLINGS:
        raise ValueError(f"supervoxel sampling {strategy!r}: expected one of {SUPERVOXEL_SAMPLINGS}")
    n_s = n_minor.numel()
    w = torch.full((n_s,), 1.0 / n_s, dtype=torch.float64)
    if strategy in ("difficulty", "category"):
        w = w / (4.0 * torch.exp(-2.0 * n_minor.double()) + 1.0)
    if strategy in ("difficulty", "distance"):
        w = w * (outer_dist.double() / outer_dist.max().double())
    return w * nonempty.double()


def difficulty_weights(n_minor, outer_dist, nonempty):
    """Eq. (3) of PVD: :func:`supervoxel_weights` with ``strategy="difficulty"``."""
    return supervoxel_weights(n_minor, outer_dist, nonempty, "difficulty")


def padded_affinity(feat, n):
    """Cosine affinity (PVD eq. 4) of ``feat`` (m, C) zero-padded to n rows: (n, n); padded rows and
    columns are 0."""
    if feat.shape[0] < n:
        feat = torch.cat([feat, feat.new_zeros((n - feat.shape[0], feat.shape[1]))], dim=0)
    return cosine_affinity(feat)


def point_cloud_range_of(detector):
    """The point-cloud range (6,) the detector was built for (from its dataset)."""
    ds = getattr(detector, "dataset", None)
    pcr = getattr(ds, "point_cloud_range", None)
    if pcr is None:
        pcr = getattr(getattr(ds, "data_processor", None), "point_cloud_range", None)
    if pcr is None:
        raise ValueError(f"cannot tell the point-cloud range of {type(detector).__name__} (no dataset)")
    return np.asarray(pcr, dtype=np.float64)


def cell_centres(h, w, pcr):
    """(H*W, 3) LiDAR (x, y, 0) of the cell centres of an (H, W) BEV map over ``pcr`` (row = y, column = x)."""
    ys = pcr[1] + (np.arange(h) + 0.5) * (pcr[4] - pcr[1]) / h
    xs = pcr[0] + (np.arange(w) + 0.5) * (pcr[3] - pcr[0]) / w
    yy, xx = np.meshgrid(ys, xs, indexing="ij")
    return np.stack([xx.ravel(), yy.ravel(), np.zeros(h * w)], axis=1).astype(np.float32)


def valid_gt(gt_boxes_b):
    """Rows of one sample's ``gt_boxes`` that are boxes (not padding)."""
    return gt_boxes_b[(gt_boxes_b[:, 3:6].abs().sum(dim=1) > 0) & (gt_boxes_b[:, -1] > 0)]


def gt_bev_masks(gt_boxes, h, w, pcr):
    """(B, H, W) int64: index (into the sample's valid boxes) of the GT box holding each cell centre, -1 if none.

    Also returns the list of valid boxes per sample. Heights are ignored (a BEV test).
    """
    centres = torch.from_numpy(cell_centres(h, w, pcr)).to(gt_boxes.device)
    out, boxes = [], []
    for b in range(gt_boxes.shape[0]):
        g = valid_gt(gt_boxes[b].detach()).float()
        boxes.append(g)
        if g.shape[0] == 0:
            out.append(torch.full((h * w,), -1, dtype=torch.long, device=gt_boxes.device))
            continue
        flat = g[:, :7].clone()
        flat[:, 2] = 0.0
        flat[:, 5] = 1e4  # BEV test: every height is inside
        out.append(points_in_boxes_index(centres, flat).to(gt_boxes.device))  # numba on CPU, torch on CUDA
    return torch.stack(out).view(-1, h, w), boxes


#: pre-NMS cap of ``confident_boxes``: OpenPCDet's KITTI post-processing NMS_PRE_MAXSIZE (PointPillars, SECOND)
NMS_PRE_MAXSIZE = 4096


def confident_boxes(cls_logits, boxes, score_thresh, nms_thresh, max_boxes, pre_max=NMS_PRE_MAXSIZE):
    """Indices of one sample's anchor predictions whose best sigmoid score is >= ``score_thresh``, after
    class-agnostic rotated BEV NMS as the detectors' post-processing runs it (the ``pre_max`` best scores
    enter the NMS, at most ``max_boxes`` are kept), best first; and all best scores. Without the pre-NMS cap
    a teacher confident on most anchors (an early or miscalibrated one) makes the greedy NMS quadratic in
    the anchor count (321,408 on the KITTI PointPillars grid)."""
    score = torch.sigmoid(cls_logits.float()).max(dim=-1).values
    nms_cfg = EasyDict(NMS_PRE_MAXSIZE=int(pre_max), NMS_THRESH=float(nms_thresh), NMS_POST_MAXSIZE=int(max_boxes))
    idx, _ = class_agnostic_nms(score, boxes.float(), nms_cfg, score_thresh=score_thresh)
    return idx, score


class Adapter1x1(nn.Module):
    """Student -> teacher channels on a BEV map: 1x1 conv (+ BN (+ ReLU)) as the method's paper uses."""

    def __init__(self, c_in, c_out, bn=False, relu=False, bias=None):
        super().__init__()
        layers = [nn.Conv2d(c_in, c_out, 1, bias=(not bn) if bias is None else bias)]
        if bn:
            layers.append(nn.BatchNorm2d(c_out))
        if relu:
            layers.append(nn.ReLU())
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)


def teacher_map(batch_dict, key, like):
    """``key + '_tea'`` as float32, detached, checked to have the spatial size of ``like`` (B, C, H, W)."""
    tkey = tea(key)
    if tkey not in batch_dict:
        raise KeyError(f"distillation needs {tkey!r} (the teacher's {key}); present: {sorted(batch_dict)}")
    ft = full_precision(batch_dict[tkey].detach())
    if ft.dim() != like.dim() or ft.shape[0] != like.shape[0] or ft.shape[2:] != like.shape[2:]:
        raise ValueError(f"{key}: teacher map {tuple(ft.shape)} and student map {tuple(like.shape)} differ in batch "
                         f"or spatial size (distil a place where both have the same resolution)")
    return ft


def student_map(batch_dict, key):
    if key not in batch_dict:
        raise KeyError(f"distillation needs {key!r} (a student feature); present: {sorted(batch_dict)}")
    return full_precision(batch_dict[key])
