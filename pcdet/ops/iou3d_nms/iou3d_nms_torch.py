"""Rotated box IoU and NMS in torch operations, on the device of the input (the CUDA path).

Same conventions and results as the numba kernels of :mod:`.iou3d_nms_utils` (LiDAR boxes
``[x, y, z, dx, dy, dz, heading]``; BEV rectangle ``(x, y, dx, dy, heading)``; 3D overlap = BEV
intersection x overlap of the z-intervals), computed batched over box pairs without leaving the
device:

* intersection of two rectangles (convex): its vertices are the corners of each rectangle inside
  the other plus the crossings of their edges (4 x 4 segment pairs); those candidates (24 per pair,
  a mask marks the valid ones) are ordered by angle around their mean and the area follows from the
  shoelace formula (invalid slots are set to the first vertex after sorting, so they add zero);
* greedy NMS (visit boxes by descending score, suppress those with BEV IoU > thresh against a kept
  one): the exact greedy result is the unique solution of ``keep_i = not any_{j before i} (keep_j and
  IoU_ij > thresh)``, found by iterating that equation on the suppression matrix on the device until
  it no longer changes (as many iterations as the longest alternating kept / suppressed chain, each
  check one scalar read); after ``DEVICE_ITERATIONS`` the remaining scan runs sequentially on a host
  copy of the boolean matrix (what OpenPCDet's ``nms_gpu`` does with its mask), so a long chain costs
  O(n^2), not O(n^3). The IoU matrix is built in chunks of ``CHUNK_PAIRS`` box pairs (about 4 KB of
  transient memory per pair).

Sizes are taken as absolute values (as the numba kernels do). Computed in float64 where the device
supports it (float32 on MPS, with a coarser tolerance); no autograd graph is kept. Tested against the
numba kernels on random boxes.
"""
import torch

#: box pairs per chunk of the IoU matrix (about 4 KB of transient memory per pair: 0.5 GB per chunk)
CHUNK_PAIRS = 1 << 17
#: fixed-point iterations of NMS on the device before the sequential scan finishes on the host
DEVICE_ITERATIONS = 16


def _eps(dtype):
    return 1e-9 if dtype == torch.float64 else 1e-5


def _corners(bev):
    """(K, 5) rectangles -> (K, 4, 2) corners, counter-clockwise."""
    x, y, dx, dy, h = bev.unbind(-1)
    c, s = torch.cos(h), torch.sin(h)
    sx = torch.tensor([0.5, -0.5, -0.5, 0.5], dtype=bev.dtype, device=bev.device)
    sy = torch.tensor([0.5, 0.5, -0.5, -0.5], dtype=bev.dtype, device=bev.device)
    lx, ly = sx * dx[:, None], sy * dy[:, None]
    return torch.stack([x[:, None] + lx * c[:, None] - ly * s[:, None], y[:, None] + lx * s[:, None] + ly * c[:, None]], -1)


def _inside(points, bev):
    """points (N, M, P, 2) inside rectangle m of ``bev`` (M, 5), boundary included (tolerance 1e-9 m)."""
    eps = _eps(bev.dtype)
    x, y, dx, dy, h = (v[None, :, None] for v in bev.unbind(-1))
    px, py = points[..., 0] - x, points[..., 1] - y
    c, s = torch.cos(h), torch.sin(h)
    lx, ly = px * c + py * s, -px * s + py * c
    return (lx.abs() <= dx / 2 + eps) & (ly.abs() <= dy / 2 + eps)


@torch.no_grad()
def bev_inter_area(bev_a, bev_b):
    """(N, 5), (M, 5) rectangles -> (N, M) intersection areas, on their device (sizes as absolute values)."""
    eps = _eps(bev_a.dtype)
    bev_a, bev_b = bev_a.clone(), bev_b.clone()
    bev_a[:, 2:4], bev_b[:, 2:4] = bev_a[:, 2:4].abs(), bev_b[:, 2:4].abs()
    n, m = bev_a.shape[0], bev_b.shape[0]
    ca, cb = _corners(bev_a), _corners(bev_b)  # (N, 4, 2), (M, 4, 2)
    # corners of a inside b and of b inside a
    a_pts = ca[:, None].expand(n, m, 4, 2)
    b_pts = cb[None].expand(n, m, 4, 2)
    a_in = _inside(a_pts, bev_b)
    b_in = _inside(b_pts.transpose(0, 1), bev_a).transpose(0, 1)
    # edge crossings: segment p + t r (edges of a) against q + u s (edges of b)
    p, r = ca, ca.roll(-1, dims=1) - ca  # (N, 4, 2)
    q, s = cb, cb.roll(-1, dims=1) - cb  # (M, 4, 2)
    p, r = p[:, None, :, None], r[:, None, :, None]  # (N, 1, 4, 1, 2)
    q, s = q[None, :, None], s[None, :, None]  # (1, M, 1, 4, 2)

    def cross(u, v):
        return u[..., 0] * v[..., 1] - u[..., 1] * v[..., 0]

    denom = cross(r, s)  # (N, M, 4, 4)
    qp = q - p
    ok = denom.abs() > eps * r.norm(dim=-1) * s.norm(dim=-1)  # not parallel (relative to the edge lengths)
    safe = torch.where(ok, denom, torch.ones_like(denom))
    t, u = cross(qp, s) / safe, cross(qp, r) / safe
    hit = ok & (t >= -eps) & (t <= 1 + eps) & (u >= -eps) & (u <= 1 + eps)
    crossings = (p + t[..., None] * r).reshape(n, m, 16, 2)
    pts = torch.cat([a_pts, b_pts, crossings], dim=2)  # (N, M, 24, 2)
    valid = torch.cat([a_in, b_in, hit.reshape(n, m, 16)], dim=2)
    count = valid.sum(-1)
    centre = (pts * valid[..., None]).sum(2) / count.clamp_min(1)[..., None]
    rel = pts - centre[:, :, None]
    angle = torch.atan2(rel[..., 1], rel[..., 0])
    angle = torch.where(valid, angle, torch.full_like(angle, 10.0))  # invalid slots sort last
    order = angle.argsort(dim=-1)
    rel = rel.gather(2, order[..., None].expand(-1, -1, -1, 2))
    valid = valid.gather(2, order)
    rel = torch.where(valid[..., None], rel, rel[:, :, :1])  # invalid slots: the first vertex
    area = 0.5 * cross(rel, rel.roll(-1, dims=2)).sum(-1).abs()
    return torch.where(count >= 3, area, torch.zeros_like(area))


def _work_dtype(t):
    return torch.float32 if t.device.type == "mps" else torch.float64


def _pairs_in_chunks(boxes_a, boxes_b, fn):
    """``fn`` over blocks of rows and columns holding at most ``CHUNK_PAIRS`` pairs each."""
    cols = max(1, min(boxes_b.shape[0], CHUNK_PAIRS))
    rows = max(1, CHUNK_PAIRS // cols)
    out = [torch.cat([fn(boxes_a[i:i + rows], boxes_b[j:j + cols]) for j in range(0, boxes_b.shape[0], cols)], dim=1)
           for i in range(0, boxes_a.shape[0], rows)]
    return torch.cat(out, dim=0)


def _overlap_work(boxes_a, boxes_b, use_3d):
    """IoU in the working dtype (float64 where the device has it)."""
    wd = _work_dtype(boxes_a)
    a, b = boxes_a[:, :7].to(wd).clone(), boxes_b[:, :7].to(boxes_a.device, wd).clone()
    a[:, 3:6], b[:, 3:6] = a[:, 3:6].abs(), b[:, 3:6].abs()
    if a.shape[0] == 0 or b.shape[0] == 0:
        return a.new_zeros((a.shape[0], b.shape[0]))

    def block(a_, b_):
        inter = bev_inter_area(a_[:, [0, 1, 3, 4, 6]], b_[:, [0, 1, 3, 4, 6]])
        size_a, size_b = a_[:, 3] * a_[:, 4], b_[:, 3] * b_[:, 4]
        if use_3d:
            lo = torch.maximum((a_[:, 2] - a_[:, 5] / 2)[:, None], (b_[:, 2] - b_[:, 5] / 2)[None])
            hi = torch.minimum((a_[:, 2] + a_[:, 5] / 2)[:, None], (b_[:, 2] + b_[:, 5] / 2)[None])
            inter = inter * (hi - lo).clamp_min(0)
            size_a, size_b = size_a * a_[:, 5], size_b * b_[:, 5]
        union = size_a[:, None] + size_b[None] - inter
        return torch.where(union > 0, inter / union.clamp_min(1e-300), torch.zeros_like(inter))

    return _pairs_in_chunks(a, b, block)


@torch.no_grad()
def boxes_overlap(boxes_a, boxes_b, use_3d=False):
    """(N, 7), (M, 7) -> (N, M) BEV (``use_3d`` False) or 3D IoU, on the boxes' device, in their dtype."""
    out_dtype = boxes_a.dtype if boxes_a.is_floating_point() else torch.float32
    return _overlap_work(boxes_a, boxes_b, use_3d).to(out_dtype)


def boxes_bev_iou(boxes_a, boxes_b):
    return boxes_overlap(boxes_a, boxes_b, use_3d=False)


def boxes_iou3d(boxes_a, boxes_b):
    return boxes_overlap(boxes_a, boxes_b, use_3d=True)


@torch.no_grad()
def nms(boxes, scores, thresh, pre_max_size=None, post_max_size=None):
    """Greedy rotated-BEV NMS on the device: the kept indices into ``boxes`` (int64), best first; same
    rules as :func:`.iou3d_nms_utils.nms_cpu` (stable order for equal scores, IoU > thresh suppresses,
    ``post_max_size`` None or negative: no limit)."""
    s = scores.reshape(-1).to(boxes.device)
    if s.numel() != boxes.shape[0]:
        raise ValueError(f"{boxes.shape[0]} boxes but {s.numel()} scores")
    order = torch.sort(-s.to(_work_dtype(s)), stable=True)[1]
    if pre_max_size is not None:
        order = order[:pre_max_size]
    if order.numel() == 0 or post_max_size == 0:
        return order.new_zeros(0)
    iou = _overlap_work(boxes[order], boxes[order], use_3d=False)  # compared in float64, as the kernels do
    n = order.numel()
    sup = (iou > thresh) & torch.ones(n, n, dtype=torch.bool, device=boxes.device).tril(-1)  # j < i suppresses i
    keep = torch.ones(n, dtype=torch.bool, device=boxes.device)
    converged = False
    for _ in range(min(n, DEVICE_ITERATIONS)):
        new = ~(sup & keep[None]).any(dim=1)
        if torch.equal(new, keep):
            converged = True
            break
        keep = new
    if not converged and n > DEVICE_ITERATIONS:  # a long suppression chain: finish the scan sequentially
        import numpy as np

        mask = sup.cpu().numpy()
        kept_np = np.zeros(n, dtype=bool)
        for i in range(n):
            kept_np[i] = not mask[i, kept_np].any()
        keep = torch.from_numpy(kept_np).to(boxes.device)
    kept = order[keep]
    return kept if post_max_size is None or post_max_size < 0 else kept[:int(post_max_size)]
