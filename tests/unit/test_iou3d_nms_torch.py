"""The device (torch) rotated IoU and NMS (``pcdet.ops.iou3d_nms.iou3d_nms_torch``, the CUDA path) against
the numba kernels, run here on CPU tensors: IoU to 1e-9 on random, identical, nested, touching and
rotated boxes; NMS the same kept indices in the same order; the dispatchers pick numba for CPU tensors."""
import math

import pytest
import torch

from pcdet.ops.iou3d_nms import boxes_bev_iou, boxes_bev_iou_cpu, boxes_iou3d, boxes_iou3d_cpu, nms, nms_cpu
from pcdet.ops.iou3d_nms import iou3d_nms_torch as dev
from tests.helpers import random_boxes


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_iou_equals_the_numba_kernels_on_random_boxes(seed):
    a, b = random_boxes(120, seed), random_boxes(90, seed + 10)
    bev, bev_ref = dev.boxes_bev_iou(a, b), boxes_bev_iou_cpu(a, b)
    iou3d, iou3d_ref = dev.boxes_iou3d(a, b), boxes_iou3d_cpu(a, b)
    assert (bev_ref > 0).float().mean() > 0.05  # enough overlapping pairs to mean something
    assert (bev - bev_ref).abs().max().item() < 1e-9 and (iou3d - iou3d_ref).abs().max().item() < 1e-9


def test_special_cases_by_hand():
    boxes = torch.tensor([[0, 0, 0, 2, 2, 1, 0.0],  # unit square x4
                          [1, 0, 0, 2, 2, 1, 0.0],  # shifted by half: IoU 2 / 6
                          [0, 0, 0, 1, 1, 1, 0.0],  # nested: 1 / 4
                          [2, 0, 0, 2, 2, 1, 0.0],  # touching the first along an edge: 0
                          [0, 0, 0, 2, 2, 1, math.pi / 4]], dtype=torch.float64)  # rotated 45 deg
    iou = dev.boxes_bev_iou(boxes, boxes)
    octagon = 8 * (math.sqrt(2) - 1)  # the square and its 45-degree rotation overlap in an octagon
    expected = {(0, 0): 1.0, (0, 1): 2 / 6, (0, 2): 0.25, (0, 3): 0.0, (0, 4): octagon / (8 - octagon)}
    for (i, j), v in expected.items():
        assert iou[i, j].item() == pytest.approx(v, abs=1e-12), (i, j)
    assert torch.allclose(iou, iou.t(), atol=1e-12)
    assert dev.boxes_bev_iou(boxes[:0], boxes).shape == (0, 5)


@pytest.mark.parametrize("thresh,pre,post", [(0.1, None, None), (0.3, 200, None), (0.5, None, 40), (0.7, 150, 60)])
def test_nms_keeps_what_the_numba_nms_keeps(thresh, pre, post):
    boxes = random_boxes(300, 5, spread=15.0)
    g = torch.Generator().manual_seed(6)
    scores = torch.rand(300, generator=g).double()
    scores[10:20] = scores[0]  # ties keep input order in both
    kept = dev.nms(boxes, scores, thresh, pre, post)
    assert torch.equal(kept, nms_cpu(boxes, scores, thresh, pre, post)) and len(kept) > 10


def test_chunked_iou_matrix_equals_the_whole(monkeypatch):
    a, b = random_boxes(50, 3), random_boxes(40, 4)
    whole = dev.boxes_bev_iou(a, b)
    monkeypatch.setattr(dev, "CHUNK_PAIRS", 7 * 40)  # 7 rows per chunk
    assert torch.equal(dev.boxes_bev_iou(a, b), whole)


def test_dispatch_uses_numba_for_cpu_tensors(monkeypatch):
    a = random_boxes(20, 7)
    calls = []
    monkeypatch.setattr(dev, "boxes_bev_iou", lambda *x: calls.append("bev"))
    monkeypatch.setattr(dev, "boxes_iou3d", lambda *x: calls.append("3d"))
    monkeypatch.setattr(dev, "nms", lambda *x: calls.append("nms"))
    assert torch.equal(boxes_bev_iou(a, a), boxes_bev_iou_cpu(a, a))
    assert torch.equal(boxes_iou3d(a, a), boxes_iou3d_cpu(a, a))
    scores = torch.linspace(1, 0, 20).double()
    assert torch.equal(nms(a, scores, 0.5), nms_cpu(a, scores, 0.5))
    assert calls == []  # none of the device functions ran


def test_negative_sizes_no_limit_and_long_suppression_chains_match_the_kernels():
    boxes = torch.tensor([[0, 0, 0, -2, 2, 1, 0.0], [0, 0, 0, 2, -2, -1, 0.0], [0.5, 0, 0, 2, 2, 1, 0.3]],
                         dtype=torch.float64)
    assert torch.allclose(dev.boxes_bev_iou(boxes, boxes), boxes_bev_iou_cpu(boxes, boxes), atol=1e-12)
    assert torch.allclose(dev.boxes_iou3d(boxes, boxes), boxes_iou3d_cpu(boxes, boxes), atol=1e-12)
    scores = torch.tensor([0.9, 0.8, 0.7], dtype=torch.float64)
    assert torch.equal(dev.nms(boxes, scores, 0.99, post_max_size=-1), nms_cpu(boxes, scores, 0.99, post_max_size=-1))
    # a row of boxes 0.3 m apart: each suppresses its neighbour, a chain longer than the device iterations
    row = torch.tensor([[0.3 * i, 0, 0, 1.0, 1.0, 1.0, 0.0] for i in range(200)], dtype=torch.float64)
    order_scores = torch.linspace(1, 0.5, 200, dtype=torch.float64)
    kept = dev.nms(row, order_scores, 0.3)
    assert torch.equal(kept, nms_cpu(row, order_scores, 0.3)) and len(kept) > dev.DEVICE_ITERATIONS


def test_no_autograd_graph_is_kept():
    a = random_boxes(10, 8).requires_grad_(True)
    assert dev.boxes_bev_iou(a, a).grad_fn is None and dev.boxes_iou3d(a, a).grad_fn is None
