"""CPU rotated IoU / NMS (``pcdet.ops.iou3d_nms``) against analytic values and brute force."""
import math

import numpy as np
import pytest
import torch

from pcdet.ops.iou3d_nms import (
    boxes_3d_overlap_cpu,
    boxes_bev_inter_area_cpu,
    boxes_bev_iou_cpu,
    boxes_bev_overlap_cpu,
    boxes_iou3d_cpu,
    nms_cpu,
)


def box(x, y, z, dx, dy, dz, h):
    return [float(v) for v in (x, y, z, dx, dy, dz, h)]


def _inside(points, b):
    """(P, 2 or 3) points -> bool mask inside LiDAR box ``b`` (BEV only for 2-column points)."""
    c, s = math.cos(b[6]), math.sin(b[6])
    u = (points[:, 0] - b[0]) * c + (points[:, 1] - b[1]) * s
    v = -(points[:, 0] - b[0]) * s + (points[:, 1] - b[1]) * c
    m = (np.abs(u) <= b[3] / 2) & (np.abs(v) <= b[4] / 2)
    if points.shape[1] == 3:
        m &= np.abs(points[:, 2] - b[2]) <= b[5] / 2
    return m


def _monte_carlo_iou(a, b, rng, n=400_000, dims=2):
    """IoU estimated from uniform samples in a region covering both boxes."""
    ra = 0.5 * math.hypot(a[3], a[4])
    rb = 0.5 * math.hypot(b[3], b[4])
    lo = np.array([min(a[0] - ra, b[0] - rb), min(a[1] - ra, b[1] - rb), min(a[2] - a[5] / 2, b[2] - b[5] / 2)])
    hi = np.array([max(a[0] + ra, b[0] + rb), max(a[1] + ra, b[1] + rb), max(a[2] + a[5] / 2, b[2] + b[5] / 2)])
    pts = lo[:dims] + rng.random((n, dims)) * (hi - lo)[:dims]
    ia, ib = _inside(pts, a), _inside(pts, b)
    union = np.count_nonzero(ia | ib)
    return np.count_nonzero(ia & ib) / union if union else 0.0


def test_identical_and_disjoint():
    boxes = np.array([box(0, 0, 0, 4, 2, 1.5, 0.3), box(10, 10, 0, 1, 1, 1, 1.0)])
    iou = boxes_bev_iou_cpu(boxes, boxes)
    np.testing.assert_allclose(iou, np.eye(2), atol=1e-12)
    np.testing.assert_allclose(boxes_iou3d_cpu(boxes, boxes), np.eye(2), atol=1e-12)
    # same footprint, disjoint in z -> BEV 1, 3D 0
    up = boxes.copy()
    up[:, 2] += 5
    np.testing.assert_allclose(np.diag(boxes_bev_iou_cpu(boxes, up)), [1, 1], atol=1e-12)
    np.testing.assert_allclose(np.diag(boxes_iou3d_cpu(boxes, up)), [0, 0], atol=1e-12)


def test_axis_aligned_exact():
    a = np.array([box(0, 0, 0, 2, 2, 2, 0)])
    b = np.array([box(1, 0, 1, 2, 2, 2, 0)])  # half overlap in x, half in z
    assert boxes_bev_iou_cpu(a, b)[0, 0] == pytest.approx(2 / 6, abs=1e-12)
    assert boxes_iou3d_cpu(a, b)[0, 0] == pytest.approx(2 / 14, abs=1e-12)
    # a heading of pi (or pi/2 for a square) describes the same box
    b2 = b.copy()
    b2[0, 6] = math.pi
    assert boxes_bev_iou_cpu(a, b2)[0, 0] == pytest.approx(2 / 6, abs=1e-12)
    b3 = np.array([box(0.5, 0.5, 0, 1, 3, 2, math.pi / 2)])  # 3 x 1 after rotation
    inter = 2.0 * 1.0  # rotated extents 3 x 1: x in [-1, 2] and y in [0, 1], clipped by a to x in [-1, 1]
    assert boxes_bev_iou_cpu(a, b3)[0, 0] == pytest.approx(inter / (4 + 3 - inter), abs=1e-12)
    assert boxes_bev_overlap_cpu(a, b3, "inter")[0, 0] == pytest.approx(inter, abs=1e-12)
    assert boxes_bev_overlap_cpu(a, b3, "a")[0, 0] == pytest.approx(inter / 4, abs=1e-12)
    assert boxes_bev_overlap_cpu(a, b3, "b")[0, 0] == pytest.approx(inter / 3, abs=1e-12)
    assert boxes_3d_overlap_cpu(a, b, "a")[0, 0] == pytest.approx(2 / 8, abs=1e-12)


def test_rotated_45_degrees():
    big = np.array([box(0, 0, 0, 4, 4, 1, 0)])
    small = np.array([box(0.3, -0.2, 0, 2, 2, 1, math.pi / 4)])  # diagonal 2.83 fits inside
    assert boxes_bev_iou_cpu(big, small)[0, 0] == pytest.approx(4 / 16, abs=1e-12)
    # two concentric 2x2 squares, one turned by 45 degrees: a regular octagon of area 8(sqrt2 - 1)
    sq = np.array([box(0, 0, 0, 2, 2, 1, 0)])
    turned = np.array([box(0, 0, 0, 2, 2, 1, math.pi / 4)])
    inter = 8 * (math.sqrt(2) - 1)
    assert boxes_bev_overlap_cpu(sq, turned, "inter")[0, 0] == pytest.approx(inter, abs=1e-12)
    assert boxes_bev_iou_cpu(sq, turned)[0, 0] == pytest.approx(inter / (8 - inter), abs=1e-12)


def test_random_boxes_against_monte_carlo():
    rng = np.random.default_rng(0)
    n = 12
    a = np.column_stack([rng.uniform(-1, 1, n), rng.uniform(-1, 1, n), rng.uniform(-0.5, 0.5, n),
                         rng.uniform(1, 4, n), rng.uniform(0.5, 2, n), rng.uniform(0.5, 2, n),
                         rng.uniform(-np.pi, np.pi, n)])
    b = a + np.column_stack([rng.normal(0, 0.7, (n, 3)), rng.normal(0, 0.3, (n, 3)), rng.uniform(-1, 1, n)])
    b[:, 3:6] = np.abs(b[:, 3:6]) + 0.2
    bev = boxes_bev_iou_cpu(a, b)
    iou3d = boxes_iou3d_cpu(a, b)
    assert bev.shape == (n, n)
    checked = 0
    for i in range(n):
        assert bev[i, i] == pytest.approx(_monte_carlo_iou(a[i], b[i], rng, dims=2), abs=1e-2)
        assert iou3d[i, i] == pytest.approx(_monte_carlo_iou(a[i], b[i], rng, dims=3), abs=1e-2)
        checked += bev[i, i] > 0.05
    assert checked >= n // 2  # most pairs really overlap
    np.testing.assert_allclose(boxes_bev_iou_cpu(b, a), bev.T, atol=1e-12)
    # the intersection area of the raw BEV rectangles agrees with the box-level helper
    inter = boxes_bev_inter_area_cpu(a[:, [0, 1, 3, 4, 6]], b[:, [0, 1, 3, 4, 6]])
    np.testing.assert_allclose(inter, boxes_bev_overlap_cpu(a, b, "inter"), atol=1e-12)


def test_torch_in_torch_out_and_empty():
    a = torch.tensor([box(0, 0, 0, 2, 2, 2, 0)], dtype=torch.float32)
    b = torch.tensor([box(1, 0, 1, 2, 2, 2, 0), box(9, 9, 0, 1, 1, 1, 0)], dtype=torch.float32)
    out = boxes_iou3d_cpu(a, b)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32 and out.shape == (1, 2)
    assert out[0, 0].item() == pytest.approx(2 / 14, abs=1e-6)
    assert isinstance(boxes_bev_iou_cpu(a.numpy(), b.numpy()), np.ndarray)
    assert boxes_bev_iou_cpu(torch.zeros((0, 7)), b).shape == (0, 2)
    assert boxes_iou3d_cpu(np.zeros((3, 7)), np.zeros((0, 7))).shape == (3, 0)
    keep = nms_cpu(torch.zeros((0, 7)), torch.zeros(0), 0.5)
    assert isinstance(keep, torch.Tensor) and keep.dtype == torch.int64 and keep.numel() == 0
    with pytest.raises(ValueError):
        boxes_bev_iou_cpu(np.zeros((2, 5)), np.zeros((2, 7)))


def _greedy_reference(boxes, scores, thresh, pre=None, post=None):
    order = sorted(range(len(scores)), key=lambda k: -scores[k])
    if pre is not None:
        order = order[:pre]
    iou = boxes_bev_iou_cpu(boxes, boxes)
    keep = []
    for i in order:
        if all(iou[i, k] <= thresh for k in keep):
            keep.append(i)
    return keep if post is None else keep[:post]


@pytest.mark.parametrize("thresh,pre,post", [(0.1, None, None), (0.5, None, None), (0.3, 40, 10), (0.7, 25, None)])
def test_nms_matches_greedy_loop(thresh, pre, post):
    rng = np.random.default_rng(1)
    n = 60
    boxes = np.column_stack([rng.uniform(0, 8, n), rng.uniform(0, 8, n), np.zeros(n), rng.uniform(1, 3, n),
                             rng.uniform(1, 2, n), np.ones(n), rng.uniform(-np.pi, np.pi, n)])
    scores = rng.random(n)
    keep = nms_cpu(boxes, scores, thresh, pre_max_size=pre, post_max_size=post)
    assert keep.dtype == np.int64
    assert keep.tolist() == _greedy_reference(boxes, scores, thresh, pre, post)
    assert 0 < len(keep) < n
    tkeep = nms_cpu(torch.from_numpy(boxes), torch.from_numpy(scores), thresh, pre, post)
    assert tkeep.tolist() == keep.tolist()


@pytest.mark.parametrize("pre,post", [(4096, 500), (30, 7), (60, 1)])
def test_post_processing_nms_equals_the_greedy_loop_cut_to_its_post_max_size(pre, post):
    """The detectors' NMS (``model_nms_utils``) stops its scan at NMS_POST_MAXSIZE kept boxes: the same
    indices as the full greedy loop cut to that many, for class-agnostic and class-aware NMS."""
    from easydict import EasyDict

    from pcdet.models.model_utils.model_nms_utils import class_agnostic_nms, multi_classes_nms

    rng = np.random.default_rng(3)
    n = 60
    boxes = np.column_stack([rng.uniform(0, 8, n), rng.uniform(0, 8, n), np.zeros(n), rng.uniform(1, 3, n),
                             rng.uniform(1, 2, n), np.ones(n), rng.uniform(-np.pi, np.pi, n)])
    scores = rng.permutation(n) / n + 0.01  # distinct: the reference's order is unambiguous
    cfg = EasyDict(NMS_PRE_MAXSIZE=pre, NMS_THRESH=0.2, NMS_POST_MAXSIZE=post)
    idx, kept = class_agnostic_nms(torch.from_numpy(scores), torch.from_numpy(boxes), cfg)
    expected = _greedy_reference(boxes, scores, 0.2, pre, post)
    assert idx.tolist() == expected and torch.equal(kept, torch.from_numpy(scores[expected]))
    two = np.stack([scores, (rng.permutation(n) + 0.5) / n + 0.01], axis=1)  # no score in both classes
    s, labels, b = multi_classes_nms(torch.from_numpy(two), torch.from_numpy(boxes), cfg)
    per_class = [(float(two[i, k]), k, i) for k in range(2) for i in _greedy_reference(boxes, two[:, k], 0.2, pre, post)]
    per_class.sort(key=lambda t: -t[0])
    assert s.tolist() == [t[0] for t in per_class[:post]] and labels.tolist() == [t[1] for t in per_class[:post]]
