"""Numba kernels for rotated-box overlaps and greedy NMS (CPU, float64).

This file owns the geometry: a rotated rectangle in the bird's-eye-view (BEV) plane is given by
``(cx, cy, dx, dy, heading)``; its corners are ``centre + R(heading) @ (+-dx/2, +-dy/2)`` with
``R(h) = [[cos h, -sin h], [sin h, cos h]]``, listed counter-clockwise. The intersection of two
rectangles is computed exactly (up to float rounding) by Sutherland-Hodgman clipping of one convex
polygon against the four half-planes of the other, followed by the shoelace formula.

Negative extents are treated by their absolute value (KITTI ``DontCare`` rows carry ``-1`` sizes).
All kernels are ``cache=True`` so that the compile cost is paid once per machine.
"""
import numpy as np
from numba import njit, prange

_MAX_VERTS = 16  # a quadrilateral clipped by four half-planes has at most 8 vertices


@njit(cache=True, inline="always")
def _rect_corners(cx, cy, dx, dy, heading, out):
    """Write the 4 counter-clockwise corners of a rotated rectangle into ``out`` (4, 2)."""
    c = np.cos(heading)
    s = np.sin(heading)
    hx = 0.5 * abs(dx)
    hy = 0.5 * abs(dy)
    # local corners (+,+), (-,+), (-,-), (+,-) are counter-clockwise
    lx0, ly0 = hx, hy
    lx1, ly1 = -hx, hy
    lx2, ly2 = -hx, -hy
    lx3, ly3 = hx, -hy
    out[0, 0] = cx + c * lx0 - s * ly0
    out[0, 1] = cy + s * lx0 + c * ly0
    out[1, 0] = cx + c * lx1 - s * ly1
    out[1, 1] = cy + s * lx1 + c * ly1
    out[2, 0] = cx + c * lx2 - s * ly2
    out[2, 1] = cy + s * lx2 + c * ly2
    out[3, 0] = cx + c * lx3 - s * ly3
    out[3, 1] = cy + s * lx3 + c * ly3


@njit(cache=True)
def convex_clip_area(poly_a, n_a, poly_b, n_b, buf0, buf1):
    """Area of the intersection of two convex counter-clockwise polygons.

    ``poly_a[:n_a]`` is clipped successively against each edge of ``poly_b[:n_b]``; ``buf0`` and
    ``buf1`` are scratch arrays of shape (_MAX_VERTS, 2).
    """
    n = n_a
    for k in range(n):
        buf0[k, 0] = poly_a[k, 0]
        buf0[k, 1] = poly_a[k, 1]
    src = buf0
    dst = buf1
    for e in range(n_b):
        if n == 0:
            return 0.0
        ex0 = poly_b[e, 0]
        ey0 = poly_b[e, 1]
        ex1 = poly_b[(e + 1) % n_b, 0]
        ey1 = poly_b[(e + 1) % n_b, 1]
        edx = ex1 - ex0
        edy = ey1 - ey0
        m = 0
        for k in range(n):
            px = src[k, 0]
            py = src[k, 1]
            qx = src[(k + 1) % n, 0]
            qy = src[(k + 1) % n, 1]
            # signed distance (times edge length) to the left of the clip edge: >= 0 is inside
            sp = edx * (py - ey0) - edy * (px - ex0)
            sq = edx * (qy - ey0) - edy * (qx - ex0)
            if sp >= 0.0:
                if m < _MAX_VERTS:
                    dst[m, 0] = px
                    dst[m, 1] = py
                    m += 1
                if sq < 0.0:
                    t = sp / (sp - sq)
                    if m < _MAX_VERTS:
                        dst[m, 0] = px + t * (qx - px)
                        dst[m, 1] = py + t * (qy - py)
                        m += 1
            elif sq >= 0.0:
                t = sp / (sp - sq)
                if m < _MAX_VERTS:
                    dst[m, 0] = px + t * (qx - px)
                    dst[m, 1] = py + t * (qy - py)
                    m += 1
        n = m
        tmp = src
        src = dst
        dst = tmp
    if n < 3:
        return 0.0
    area = 0.0
    for k in range(n):
        area += src[k, 0] * src[(k + 1) % n, 1] - src[(k + 1) % n, 0] * src[k, 1]
    return max(0.5 * area, 0.0)


@njit(cache=True)
def rect_inter_area(a, b, ca, cb, buf0, buf1):
    """Intersection area of BEV rectangles ``a`` and ``b`` (each ``[cx, cy, dx, dy, heading]``).

    ``ca``/``cb`` are (4, 2) scratch arrays for the corners.
    """
    # cheap rejection with the circumscribed circles
    ra = 0.5 * np.sqrt(a[2] * a[2] + a[3] * a[3])
    rb = 0.5 * np.sqrt(b[2] * b[2] + b[3] * b[3])
    ddx = a[0] - b[0]
    ddy = a[1] - b[1]
    if ddx * ddx + ddy * ddy > (ra + rb) * (ra + rb):
        return 0.0
    _rect_corners(a[0], a[1], a[2], a[3], a[4], ca)
    _rect_corners(b[0], b[1], b[2], b[3], b[4], cb)
    return convex_clip_area(ca, 4, cb, 4, buf0, buf1)


def _bev_inter_matrix(bev_a, bev_b):
    """(N, 5), (M, 5) BEV rectangles -> (N, M) intersection areas."""
    n = bev_a.shape[0]
    m = bev_b.shape[0]
    out = np.zeros((n, m), dtype=np.float64)
    for i in prange(n):
        ca = np.empty((4, 2))
        cb = np.empty((4, 2))
        buf0 = np.empty((_MAX_VERTS, 2))
        buf1 = np.empty((_MAX_VERTS, 2))
        for j in range(m):
            out[i, j] = rect_inter_area(bev_a[i], bev_b[j], ca, cb, buf0, buf1)
    return out


def _boxes3d_overlap_matrix(boxes_a, boxes_b, use_3d, criterion):
    """(N, 7), (M, 7) LiDAR boxes -> (N, M) overlaps.

    ``use_3d``: multiply the BEV intersection by the z-overlap and use volumes instead of areas.
    ``criterion``: 0 = IoU (intersection / union), 1 = intersection / size of a,
    2 = intersection / size of b, 3 = the raw intersection (area or volume).
    """
    n = boxes_a.shape[0]
    m = boxes_b.shape[0]
    out = np.zeros((n, m), dtype=np.float64)
    for i in prange(n):
        ca = np.empty((4, 2))
        cb = np.empty((4, 2))
        buf0 = np.empty((_MAX_VERTS, 2))
        buf1 = np.empty((_MAX_VERTS, 2))
        ra = np.empty(5)
        rb = np.empty(5)
        ra[0] = boxes_a[i, 0]
        ra[1] = boxes_a[i, 1]
        ra[2] = boxes_a[i, 3]
        ra[3] = boxes_a[i, 4]
        ra[4] = boxes_a[i, 6]
        size_a = abs(boxes_a[i, 3] * boxes_a[i, 4])
        if use_3d:
            size_a *= abs(boxes_a[i, 5])
        for j in range(m):
            rb[0] = boxes_b[j, 0]
            rb[1] = boxes_b[j, 1]
            rb[2] = boxes_b[j, 3]
            rb[3] = boxes_b[j, 4]
            rb[4] = boxes_b[j, 6]
            inter = rect_inter_area(ra, rb, ca, cb, buf0, buf1)
            size_b = abs(boxes_b[j, 3] * boxes_b[j, 4])
            if use_3d:
                size_b *= abs(boxes_b[j, 5])
                top = min(boxes_a[i, 2] + 0.5 * abs(boxes_a[i, 5]), boxes_b[j, 2] + 0.5 * abs(boxes_b[j, 5]))
                bottom = max(boxes_a[i, 2] - 0.5 * abs(boxes_a[i, 5]), boxes_b[j, 2] - 0.5 * abs(boxes_b[j, 5]))
                inter *= max(top - bottom, 0.0)
            if criterion == 0:
                den = size_a + size_b - inter
            elif criterion == 1:
                den = size_a
            elif criterion == 2:
                den = size_b
            else:
                den = 1.0
            out[i, j] = inter / den if den > 0.0 else 0.0
    return out


# Each pairwise kernel is compiled twice: multi-threaded for large problems in the main process,
# and single-threaded for small ones and for DataLoader worker processes (OpenMP thread pools do
# not survive fork(): a threaded kernel in a forked worker can hang).
bev_inter_matrix = njit(cache=True, parallel=True)(_bev_inter_matrix)
bev_inter_matrix_serial = njit(cache=True)(_bev_inter_matrix)
boxes3d_overlap_matrix = njit(cache=True, parallel=True)(_boxes3d_overlap_matrix)
boxes3d_overlap_matrix_serial = njit(cache=True)(_boxes3d_overlap_matrix)


@njit(cache=True)
def nms_greedy(bev, order, thresh, max_keep):
    """Greedy NMS over BEV rectangles ``bev`` (N, 5) visited in ``order`` (best first).

    A box is dropped when its BEV IoU with an already kept box is greater than ``thresh``.
    Returns the kept indices (into ``bev``), at most ``max_keep`` of them (``max_keep < 0``: all).
    """
    n = order.shape[0]
    keep = np.empty(n, dtype=np.int64)
    n_keep = 0
    removed = np.zeros(bev.shape[0], dtype=np.bool_)
    ca = np.empty((4, 2))
    cb = np.empty((4, 2))
    buf0 = np.empty((_MAX_VERTS, 2))
    buf1 = np.empty((_MAX_VERTS, 2))
    for oi in range(n):
        i = order[oi]
        if removed[i]:
            continue
        keep[n_keep] = i
        n_keep += 1
        if max_keep >= 0 and n_keep >= max_keep:
            break
        area_i = abs(bev[i, 2] * bev[i, 3])
        for oj in range(oi + 1, n):
            j = order[oj]
            if removed[j]:
                continue
            inter = rect_inter_area(bev[i], bev[j], ca, cb, buf0, buf1)
            union = area_i + abs(bev[j, 2] * bev[j, 3]) - inter
            if union > 0.0 and inter / union > thresh:
                removed[j] = True
    return keep[:n_keep]
