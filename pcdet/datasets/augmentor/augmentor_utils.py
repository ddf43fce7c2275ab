"""Global (whole-scene) augmentations that move points and LiDAR boxes together.

Every function takes ``gt_boxes`` (M, 7+) ``[x, y, z, dx, dy, dz, heading, (vx, vy)]`` and
``points`` (N, 3+C), returns transformed copies plus the drawn parameter, and keeps the
relation "point inside box" unchanged (flips mirror, rotations rotate, scalings scale both).
Randomness comes from ``rng`` (a ``numpy.random.Generator`` or ``RandomState``; the global
``numpy.random`` state when None, which DataLoader workers seed per worker).
"""
import numpy as np

from pcdet.utils.common_utils import rotate_points_along_z


def _rng(rng):
    return np.random if rng is None else rng


def _draw(rng, low, high):
    r = _rng(rng)
    return float(r.uniform(low, high))


def flip_along_x(gt_boxes, points):
    """Mirror across the x axis (y -> -y); headings and y-velocities negate."""
    gt_boxes, points = gt_boxes.copy(), points.copy()
    gt_boxes[:, 1] = -gt_boxes[:, 1]
    gt_boxes[:, 6] = -gt_boxes[:, 6]
    points[:, 1] = -points[:, 1]
    if gt_boxes.shape[1] > 8:
        gt_boxes[:, 8] = -gt_boxes[:, 8]
    return gt_boxes, points


def flip_along_y(gt_boxes, points):
    """Mirror across the y axis (x -> -x); heading h -> pi - h (stored as -(h + pi))."""
    gt_boxes, points = gt_boxes.copy(), points.copy()
    gt_boxes[:, 0] = -gt_boxes[:, 0]
    gt_boxes[:, 6] = -(gt_boxes[:, 6] + np.pi)
    points[:, 0] = -points[:, 0]
    if gt_boxes.shape[1] > 7:
        gt_boxes[:, 7] = -gt_boxes[:, 7]
    return gt_boxes, points


def random_flip(gt_boxes, points, axis, rng=None):
    """Flip along ``axis`` ('x' or 'y') with probability 0.5; returns (boxes, points, flipped)."""
    if axis not in ("x", "y"):
        raise ValueError(f"random_world_flip: axis must be 'x' or 'y', got {axis!r}")
    enable = bool(_rng(rng).choice([False, True], p=[0.5, 0.5]))
    if enable:
        gt_boxes, points = (flip_along_x if axis == "x" else flip_along_y)(gt_boxes, points)
    return gt_boxes, points, enable


def rotate_scene(gt_boxes, points, angle):
    """Rotate the scene by ``angle`` (rad) around +z."""
    gt_boxes, points = gt_boxes.copy(), points.copy()
    ang = np.array([angle], dtype=np.float64)
    points = rotate_points_along_z(points[None], ang.astype(points.dtype))[0]
    if len(gt_boxes):
        gt_boxes[:, 0:3] = rotate_points_along_z(gt_boxes[None, :, 0:3], ang.astype(gt_boxes.dtype))[0]
        gt_boxes[:, 6] += angle
        if gt_boxes.shape[1] > 8:
            vel = np.concatenate([gt_boxes[:, 7:9], np.zeros((len(gt_boxes), 1), gt_boxes.dtype)], axis=1)
            gt_boxes[:, 7:9] = rotate_points_along_z(vel[None], ang.astype(gt_boxes.dtype))[0][:, 0:2]
    return gt_boxes, points


def global_rotation(gt_boxes, points, rot_range, rng=None):
    """Rotate by an angle drawn uniformly from ``rot_range`` (low, high); returns (boxes, points, angle)."""
    angle = _draw(rng, rot_range[0], rot_range[1])
    gt_boxes, points = rotate_scene(gt_boxes, points, angle)
    return gt_boxes, points, angle


def scale_scene(gt_boxes, points, scale, axes=(0, 1, 2)):
    """Scale coordinates, box centres, sizes and velocities by ``scale`` along ``axes``: all three, or
    x and y only (Cylinder3D's scale augmentation; heights stay, boxes stay boxes since x and y scale
    alike)."""
    axes = tuple(int(a) for a in axes)
    if axes not in ((0, 1, 2), (0, 1)):
        raise ValueError(f"scaling axes {axes}: use (0, 1, 2) (x, y, z) or (0, 1) (x, y)")
    gt_boxes, points = gt_boxes.copy(), points.copy()
    points[:, list(axes)] *= scale
    gt_boxes[:, list(axes)] *= scale
    gt_boxes[:, [3 + a for a in axes]] *= scale
    if gt_boxes.shape[1] > 8:
        gt_boxes[:, 7:9] *= scale
    return gt_boxes, points


def global_scaling(gt_boxes, points, scale_range, rng=None, axes=(0, 1, 2)):
    """Scale by a factor drawn uniformly from ``scale_range`` along ``axes`` (see :func:`scale_scene`);
    returns (boxes, points, scale)."""
    if scale_range[1] - scale_range[0] < 1e-3:
        return gt_boxes, points, 1.0
    scale = _draw(rng, scale_range[0], scale_range[1])
    gt_boxes, points = scale_scene(gt_boxes, points, scale, axes)
    return gt_boxes, points, scale


def translate_scene(gt_boxes, points, offset):
    """Shift points and box centres by ``offset`` (3,)."""
    gt_boxes, points = gt_boxes.copy(), points.copy()
    offset = np.asarray(offset, dtype=np.float64)
    points[:, 0:3] += offset.astype(points.dtype)
    if len(gt_boxes):
        gt_boxes[:, 0:3] += offset.astype(gt_boxes.dtype)
    return gt_boxes, points


def global_translation(gt_boxes, points, noise_std, rng=None):
    """Shift by an offset drawn per axis from N(0, ``noise_std``) (OpenPCDet's random_world_translation:
    one normal draw per axis, x then y then z); returns (boxes, points, offset (3,))."""
    std = np.broadcast_to(np.asarray(noise_std, dtype=np.float64), (3,))
    r = _rng(rng)
    offset = np.array([r.normal(0.0, s) if s > 0 else 0.0 for s in std], dtype=np.float64)
    gt_boxes, points = translate_scene(gt_boxes, points, offset)
    return gt_boxes, points, offset
