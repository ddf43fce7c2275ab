"""Point-in-box tests for LiDAR boxes on the CPU (numba kernels).

Owns:

* :func:`points_in_boxes_cpu` ``(points, boxes) -> (M, N)`` int mask (1 where point ``n`` lies in
  box ``m``), the layout of OpenPCDet's ``roiaware_pool3d_utils.points_in_boxes_cpu``.
* :func:`points_in_boxes_index` ``(points, boxes) -> (N,)`` index of the first box holding each
  point, -1 for none. Boxes are culled per point by their bounding radius, so it is the faster
  choice when only one box id per point is needed.

Boxes are ``(M, 7+)`` ``[x, y, z, dx, dy, dz, heading]`` (centre, sizes, yaw around +z); columns
beyond 7 are ignored. A point is inside when, in the box frame, ``|u| <= dx/2``, ``|v| <= dy/2`` and
``|w| <= dz/2`` (closed faces), computed in float64: exactly the rule of
``pcdet.utils.box_utils.points_in_boxes_mask_reference``, so counts agree point for point.
Both functions accept numpy arrays or torch tensors and return the same kind.
"""
import numba
import numpy as np
import torch


@numba.njit(cache=True)
def _box_params(boxes):
    m = boxes.shape[0]
    out = np.empty((m, 9), dtype=np.float64)  # x, y, z, hx, hy, hz, cos, sin, radius_xy
    for i in range(m):
        hx, hy, hz = boxes[i, 3] / 2.0, boxes[i, 4] / 2.0, boxes[i, 5] / 2.0
        out[i, 0], out[i, 1], out[i, 2] = boxes[i, 0], boxes[i, 1], boxes[i, 2]
        out[i, 3], out[i, 4], out[i, 5] = hx, hy, hz
        out[i, 6] = np.cos(boxes[i, 6])
        out[i, 7] = np.sin(boxes[i, 6])
        out[i, 8] = np.sqrt(hx * hx + hy * hy) * (1.0 + 1e-9) + 1e-9  # margin for rounding
    return out


@numba.njit(cache=True)
def _inside(px, py, pz, prm):
    dx = px - prm[0]
    dy = py - prm[1]
    dz = pz - prm[2]
    if abs(dz) > prm[5]:
        return False
    # Radius cull: outside the circumscribed circle means outside the box.
    if abs(dx) > prm[8] or abs(dy) > prm[8]:
        return False
    u = dx * prm[6] + dy * prm[7]
    v = -dx * prm[7] + dy * prm[6]
    return abs(u) <= prm[3] and abs(v) <= prm[4]


@numba.njit(cache=True)
def _mask_kernel(points, boxes):
    prm = _box_params(boxes)
    m, n = boxes.shape[0], points.shape[0]
    out = np.zeros((m, n), dtype=np.int32)
    for j in range(m):
        for i in range(n):
            if _inside(points[i, 0], points[i, 1], points[i, 2], prm[j]):
                out[j, i] = 1
    return out


@numba.njit(cache=True)
def _index_kernel(points, boxes):
    prm = _box_params(boxes)
    m, n = boxes.shape[0], points.shape[0]
    out = np.full(n, -1, dtype=np.int64)
    for i in range(n):
        px, py, pz = points[i, 0], points[i, 1], points[i, 2]
        for j in range(m):
            if _inside(px, py, pz, prm[j]):
                out[i] = j
                break
    return out


def _prepare(points, boxes):
    is_torch = isinstance(points, torch.Tensor)
    pts = points.detach().cpu().numpy() if is_torch else np.asarray(points)
    bxs = boxes.detach().cpu().numpy() if isinstance(boxes, torch.Tensor) else np.asarray(boxes)
    if pts.ndim != 2 or pts.shape[1] < 3:
        raise ValueError(f"points must be (N, 3+), got shape {pts.shape}")
    bxs = bxs.reshape(-1, bxs.shape[-1]) if bxs.size else np.zeros((0, 7))
    if bxs.shape[1] < 7:
        raise ValueError(f"boxes must be (M, 7+), got shape {bxs.shape}")
    pts = np.ascontiguousarray(pts[:, :3], dtype=np.float64)
    bxs = np.ascontiguousarray(bxs[:, :7], dtype=np.float64)
    return pts, bxs, is_torch


def points_in_boxes_cpu(points, boxes):
    """(N, 3+) points, (M, 7+) boxes -> (M, N) int32 mask (1 = inside)."""
    pts, bxs, is_torch = _prepare(points, boxes)
    out = _mask_kernel(pts, bxs)
    return torch.from_numpy(out) if is_torch else out


def points_in_boxes_index(points, boxes):
    """(N, 3+) points, (M, 7+) boxes -> (N,) int64 index of the first box holding each point, or -1.
    Tensors on another device than the CPU go to :func:`points_in_boxes_index_torch` (no host copy)."""
    if isinstance(points, torch.Tensor) and points.device.type != "cpu":
        return points_in_boxes_index_torch(points, boxes)
    pts, bxs, is_torch = _prepare(points, boxes)
    out = _index_kernel(pts, bxs)
    return torch.from_numpy(out) if is_torch else out


def points_in_boxes_index_torch(points, boxes, chunk=1 << 22):
    """:func:`points_in_boxes_index` in torch operations on the inputs' device (the CUDA path): the same
    closed-face rule in float64 (float32 where the device has no float64), ``(N,)`` int64 on the device.
    Works in chunks of ``chunk`` point-box pairs."""
    wd = torch.float32 if points.device.type == "mps" else torch.float64
    p = points[:, :3].to(wd)
    b = boxes.reshape(-1, boxes.shape[-1])[:, :7].to(wd)
    out = torch.full((p.shape[0],), -1, dtype=torch.long, device=points.device)
    if b.shape[0] == 0 or p.shape[0] == 0:
        return out
    c, s = torch.cos(b[:, 6]), torch.sin(b[:, 6])
    rows = max(1, chunk // b.shape[0])
    for i in range(0, p.shape[0], rows):
        d = p[i:i + rows, None, :] - b[None, :, :3]  # (n, M, 3)
        u = d[..., 0] * c + d[..., 1] * s
        v = -d[..., 0] * s + d[..., 1] * c
        inside = (u.abs() <= b[:, 3] / 2) & (v.abs() <= b[:, 4] / 2) & (d[..., 2].abs() <= b[:, 5] / 2)
        first = inside.to(torch.int8).argmax(dim=1)  # the first True (0 when none, masked below)
        out[i:i + rows] = torch.where(inside.any(dim=1), first, torch.full_like(first, -1))
    return out
