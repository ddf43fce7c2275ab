"""Distillation nodes: where a feature lives, how important each place is, which N to keep.

Owns :func:`sample_nodes` (per-sample top-N selection of aligned student/teacher nodes),
:func:`reweight` (phi = N softmax(score / tau) per sample), :func:`feature_spec` and
:func:`feature_channels` (what a built model declares about a ``batch_dict`` key, so adapters
exist before the first batch).

Where a feature lives is the :class:`pcdet.models.model_template.FeatureSpec` of the module that
writes it (``model.feature_specs[key]``); student key ``F``, teacher key ``F + '_tea'``:

* ``dense_bev`` ``(B, C, H, W)`` (``spatial_features``, ``spatial_features_<s>x``,
  ``spatial_features_2d``): nodes are cells; coordinates (y, x); sample = batch index.
* ``sparse_rows`` / ``points`` ``(V, C)``: one node per voxel / pillar / point; sample and
  coordinates from the spec's ``coord_key`` (``voxel_coords`` = [b, z, y, x]). The teacher's rows
  must be the student's rows (a shared voxelisation), which is checked.

Importance: ``num_points`` (points per node, the spec's ``count_key``; teacher side:
``voxel_num_points_tea``) or ``channel_max`` (channel-wise max of the teacher feature); ``auto``
picks ``num_points`` when the spec has a count key and ``channel_max`` otherwise. Selection is per
sample, ranked by importance with ties broken by position, and nodes come out in that canonical
order, so the result does not depend on the order in which a sample's voxels are stored.
"""
from dataclasses import dataclass

import torch

from pcdet.kd.keys import tea
from pcdet.models.model_template import FeatureSpec

IMPORTANCE_CHOICES = ("auto", "num_points", "channel_max")


class NodeAlignmentError(ValueError):
    """The student and teacher features cannot be matched node by node."""


@dataclass
class NodeSample:
    """Selected nodes of a batch, grouped by sample: rows ``ptr[b]:ptr[b+1]`` belong to sample b."""

    feat_s: torch.Tensor  # (M, C_S), keeps the student's autograd graph
    feat_t: torch.Tensor  # (M, C_T), no gradient
    score: torch.Tensor  # (M,) importance (float)
    coords: torch.Tensor  # (M, D) float positions (grid units)
    ptr: list  # B + 1 offsets

    @property
    def num_nodes(self):
        return int(self.feat_s.shape[0])


def _select_ranked(score, pos_key, sample, batch_size, n):
    """Row indices: per sample the top ``n`` by score (ties: smaller ``pos_key``), in that order.

    Returns (indices, ptr). ``n=None`` keeps every node (still in canonical order).
    """
    order = torch.argsort(pos_key, stable=True)
    order = order[torch.argsort(score[order], descending=True, stable=True)]
    order = order[torch.argsort(sample[order], stable=True)]
    counts = torch.bincount(sample, minlength=batch_size)[:batch_size]
    starts = torch.cumsum(counts, 0) - counts
    ranks = torch.arange(order.numel(), device=order.device) - starts[sample[order]]
    keep_n = counts if n is None else counts.clamp(max=int(n))
    keep = ranks < keep_n[sample[order]]
    ptr = [0] + torch.cumsum(keep_n, 0).tolist()
    return order[keep], ptr


def _position_rank(spatial):
    """(V,) rank of each row of ``spatial`` (V, D) in lexicographic order (ints or floats)."""
    order = torch.arange(spatial.shape[0], device=spatial.device)
    for d in reversed(range(spatial.shape[1])):
        order = order[torch.argsort(spatial[order, d], stable=True)]
    rank = torch.empty_like(order)
    rank[order] = torch.arange(order.numel(), device=order.device)
    return rank


_teacher_key = tea


def _get(batch_dict, key, what):
    if key not in batch_dict:
        raise KeyError(f"distillation needs {key!r} ({what}) in batch_dict; present: {sorted(batch_dict)}")
    return batch_dict[key]


def resolve_importance(spec, importance):
    """``auto`` -> ``num_points`` when ``spec`` (a :class:`FeatureSpec`) has a points-per-node key, else
    ``channel_max``; an explicit ``num_points`` needs one."""
    if importance not in IMPORTANCE_CHOICES:
        raise ValueError(f"IMPORTANCE={importance!r}: use one of {IMPORTANCE_CHOICES}")
    count_key = getattr(spec, "count_key", None)
    if importance == "auto":
        return "num_points" if count_key is not None else "channel_max"
    if importance == "num_points" and count_key is None:
        raise ValueError(f"IMPORTANCE=num_points needs a voxel/pillar feature with a points-per-node count; "
                         f"this one has none ({spec})")
    return importance


def full_precision(t):
    """``t`` as float32 when it is a half-precision tensor (bf16/fp16 from an autocast forward).

    KD losses run in full precision (the wrapper disables autocast around them): the graph
    kernels and the variance/softmax sums need float32, and the numba edge passes take float32/64.
    """
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def sample_nodes(batch_dict, feature, n, importance="auto", teacher_feature=None, spec=None):
    """Top-``n`` nodes per sample of ``feature`` (student) and ``<teacher_feature>_tea`` (teacher;
    ``teacher_feature`` defaults to ``feature``, e.g. another stride level at the same resolution).

    ``spec``: the student's :class:`FeatureSpec` of ``feature`` (needed for row features: it names the
    coordinate and count keys; a 4-D map without one is taken as ``dense_bev``). ``n=None`` keeps all
    nodes. A sample with fewer than ``n`` nodes keeps all it has.
    """
    fs0 = _get(batch_dict, feature, "student feature")
    if spec is None and fs0.dim() == 4:
        spec = FeatureSpec(int(fs0.shape[1]), "dense_bev")
    if spec is None:
        raise NodeAlignmentError(f"{feature}: a (V, C) feature needs its FeatureSpec (coordinate key); pass spec=")
    importance = resolve_importance(spec, importance)
    fs = _get(batch_dict, feature, "student feature")
    ft = _get(batch_dict, _teacher_key(teacher_feature or feature), "teacher feature")
    batch_size = int(batch_dict["batch_size"])
    ft = ft.detach()
    if fs.dim() == 4:
        if ft.dim() != 4 or fs.shape[0] != ft.shape[0] or fs.shape[2:] != ft.shape[2:]:
            raise NodeAlignmentError(
                f"{feature}: student map {tuple(fs.shape)} and teacher map {tuple(ft.shape)} differ in batch or "
                f"spatial size (distill a level where both have the same resolution)"
            )
        b, _, h, w = fs.shape
        score_map = ft.amax(dim=1).reshape(b * h * w)
        sample = torch.arange(b, device=fs.device).repeat_interleave(h * w)
        pos = torch.arange(h * w, device=fs.device).repeat(b)
        idx, ptr = _select_ranked(score_map, pos, sample, b, n)
        cell, smp = pos[idx], sample[idx]
        feat_s = fs.flatten(2)[smp, :, cell]
        feat_t = ft.flatten(2)[smp, :, cell]
        feat_s, feat_t = full_precision(feat_s), full_precision(feat_t)
        coords = torch.stack([cell // w, cell % w], dim=1).to(feat_s.dtype)
        return NodeSample(feat_s, feat_t, score_map[idx].to(feat_s.dtype), coords, ptr)
    if fs.dim() != 2 or ft.dim() != 2:
        raise NodeAlignmentError(f"{feature}: expected (V, C) or (B, C, H, W) features, got {tuple(fs.shape)} / "
                                 f"{tuple(ft.shape)}")
    if spec.layout not in ("sparse_rows", "points") or not spec.coord_key:
        raise NodeAlignmentError(f"{feature}: node sampling of (V, C) rows needs a sparse_rows/points spec with a "
                                 f"coordinate key, got {spec}")
    coord_key, count_key = spec.coord_key, spec.count_key
    coords_s = _get(batch_dict, coord_key, "student node coordinates")
    coords_t = batch_dict.get(_teacher_key(coord_key), coords_s)
    if fs.shape[0] != ft.shape[0] or (coords_t is not coords_s and not torch.equal(coords_t, coords_s)):
        raise NodeAlignmentError(
            f"{feature}: the teacher's {ft.shape[0]} nodes are not the student's {fs.shape[0]} nodes (different "
            f"voxelisation); node-wise distillation of {feature} needs a shared voxelisation"
        )
    sample = coords_s[:, 0].long()
    spatial = coords_s[:, 1:]
    if importance == "num_points":
        score = _get(batch_dict, _teacher_key(count_key), "teacher points per node").to(ft.dtype)
    else:
        score = ft.amax(dim=1) if ft.shape[1] > 0 else ft.new_zeros(ft.shape[0])
    idx, ptr = _select_ranked(score, _position_rank(spatial), sample, batch_size, n)
    feat_s, feat_t = full_precision(fs[idx]), full_precision(ft[idx])
    return NodeSample(feat_s, feat_t, score[idx].to(feat_s.dtype), spatial[idx].to(feat_s.dtype), ptr)


def reweight(score, ptr, tau, enabled=True):
    """phi (M,): per sample ``n_b * softmax(score / tau)`` (mean 1 per sample); all ones if disabled."""
    if not enabled:
        return torch.ones_like(score)
    phi = torch.empty_like(score)
    s = score.double() / float(tau)
    for b in range(len(ptr) - 1):
        lo, hi = ptr[b], ptr[b + 1]
        if hi > lo:
            phi[lo:hi] = (torch.softmax(s[lo:hi], dim=0) * (hi - lo)).to(score.dtype)
    return phi


# ------------------------------------------------------------------------------ feature specs
def feature_spec(model, feature):
    """The :class:`FeatureSpec` ``model`` declares for ``feature`` (filled when it was built)."""
    specs = getattr(model, "feature_specs", None)
    if not isinstance(specs, dict):
        raise ValueError(f"{type(model).__name__} declares no feature specs (not built on Model3DTemplate)")
    if feature not in specs:
        raise ValueError(f"{type(model).__name__} writes no feature {feature!r}; its modules declare: "
                         f"{', '.join(sorted(specs))}")
    return specs[feature]


def feature_channels(model, feature):
    """Channels of ``feature`` as produced by ``model`` (from its feature specs, no forward)."""
    return int(feature_spec(model, feature).channels)
