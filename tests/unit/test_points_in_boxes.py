"""points_in_boxes_cpu / points_in_boxes_index against the brute-force box_utils reference."""
import numpy as np
import pytest
import torch

from pcdet.ops.points_in_boxes import points_in_boxes_cpu, points_in_boxes_index, points_in_boxes_index_torch
from pcdet.utils.box_utils import boxes_to_corners_3d, points_in_boxes_mask_reference


def _scene(seed, n_points=4000, n_boxes=25):
    rng = np.random.default_rng(seed)
    boxes = np.concatenate(
        [
            rng.uniform([-20, -20, -2], [20, 20, 1], size=(n_boxes, 3)),
            rng.uniform([0.5, 0.5, 0.5], [6, 3, 3], size=(n_boxes, 3)),
            rng.uniform(-np.pi, np.pi, size=(n_boxes, 1)),
        ],
        axis=1,
    ).astype(np.float32)
    pts = rng.uniform([-22, -22, -3, 0], [22, 22, 2.5, 1], size=(n_points, 4)).astype(np.float32)
    # Also points concentrated in boxes (and overlapping boxes) so that many are inside.
    inner = []
    for b in boxes:
        local = rng.uniform(-0.6, 0.6, size=(60, 3)) * b[3:6]
        inner.append(np.c_[local, np.zeros((60, 1))])
    inner = np.concatenate(inner).astype(np.float32)
    for i, b in enumerate(boxes):
        seg = inner[i * 60 : (i + 1) * 60]
        c, s = np.cos(b[6]), np.sin(b[6])
        x = seg[:, 0] * c - seg[:, 1] * s + b[0]
        y = seg[:, 0] * s + seg[:, 1] * c + b[1]
        seg[:, 0], seg[:, 1], seg[:, 2] = x, y, seg[:, 2] + b[2]
    return np.concatenate([pts, inner]), boxes


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mask_equals_reference(seed):
    pts, boxes = _scene(seed)
    ref = points_in_boxes_mask_reference(pts, boxes)
    got = points_in_boxes_cpu(pts, boxes)
    assert got.shape == ref.shape and got.dtype == np.int32
    assert ref.sum() > 500  # the test really exercises inside points
    np.testing.assert_array_equal(got.astype(bool), ref)


@pytest.mark.parametrize("seed", [3, 4])
def test_index_is_first_containing_box(seed):
    pts, boxes = _scene(seed)
    ref = points_in_boxes_mask_reference(pts, boxes)
    expected = np.where(ref.any(axis=0), ref.argmax(axis=0), -1)
    got = points_in_boxes_index(pts, boxes)
    np.testing.assert_array_equal(got, expected)
    assert (ref.sum(axis=0) > 1).any(), "scene should contain points in overlapping boxes"


@pytest.mark.parametrize("seed", [3, 5])
def test_torch_index_equals_the_numba_index(seed):
    """The device path (torch operations; run here on CPU tensors), in chunks smaller than the scene."""
    pts, boxes = _scene(seed)
    box = np.array([[1.0, -2.0, 0.5, 4.0, 2.0, 1.5, 0.7]], dtype=np.float32)
    corners = boxes_to_corners_3d(box)[0]  # closed faces: corners (to float32 rounding) on both paths
    pts = np.concatenate([pts, np.c_[corners, np.zeros((8, 1))].astype(np.float32)])
    boxes = np.concatenate([boxes, box])
    expected = points_in_boxes_index(pts, boxes)
    got = points_in_boxes_index_torch(torch.from_numpy(pts), torch.from_numpy(boxes), chunk=26 * 1000)
    assert got.dtype == torch.int64 and (expected >= 0).sum() > 500
    np.testing.assert_array_equal(got.numpy(), expected)
    assert points_in_boxes_index_torch(torch.from_numpy(pts), torch.zeros(0, 7)).eq(-1).all()


def test_corners_and_face_points_are_inside_and_just_outside_is_not():
    box = np.array([[1.0, -2.0, 0.5, 4.0, 2.0, 1.5, 0.7]])
    corners = boxes_to_corners_3d(box)[0]
    centre = box[0, 0:3]
    inside = centre + (corners - centre) * (1 - 1e-6)
    outside = centre + (corners - centre) * (1 + 1e-4)
    mask = points_in_boxes_cpu(np.concatenate([inside, outside]), box)[0]
    assert mask.tolist() == [1] * 8 + [0] * 8
    np.testing.assert_array_equal(mask.astype(bool), points_in_boxes_mask_reference(np.concatenate([inside, outside]), box)[0])


def test_torch_in_torch_out_and_empty_inputs():
    pts, boxes = _scene(5, n_points=100, n_boxes=3)
    got = points_in_boxes_cpu(torch.from_numpy(pts), torch.from_numpy(boxes))
    assert isinstance(got, torch.Tensor) and got.shape == (3, len(pts))
    np.testing.assert_array_equal(got.numpy(), points_in_boxes_cpu(pts, boxes))
    idx = points_in_boxes_index(torch.from_numpy(pts), torch.from_numpy(boxes))
    assert isinstance(idx, torch.Tensor) and idx.shape == (len(pts),)
    assert points_in_boxes_cpu(pts, np.zeros((0, 7))).shape == (0, len(pts))
    assert (points_in_boxes_index(pts, np.zeros((0, 7))) == -1).all()
    assert points_in_boxes_cpu(np.zeros((0, 3)), boxes).shape == (3, 0)


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="points must be"):
        points_in_boxes_cpu(np.zeros((5, 2)), np.zeros((1, 7)))
    with pytest.raises(ValueError, match="boxes must be"):
        points_in_boxes_index(np.zeros((5, 3)), np.zeros((1, 6)))
