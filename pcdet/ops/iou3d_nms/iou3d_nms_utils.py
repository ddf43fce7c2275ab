"""CPU rotated-box IoU and NMS for LiDAR boxes (public wrappers around the numba kernels).

Boxes are LiDAR boxes ``[x, y, z, dx, dy, dz, heading]`` (see ``pcdet.utils.box_utils``): (x, y, z)
is the centre, dx/dy/dz the extents along the box axes, heading the yaw around +z. The BEV overlap
uses (x, y, dx, dy, heading); the 3D overlap multiplies the BEV intersection area by the overlap
of the z-intervals ``[z - dz/2, z + dz/2]``.

Every function accepts numpy arrays or torch tensors. Computation is float64 on the CPU; a torch
input gives a torch output on the input's device (float results in the input's floating dtype,
indices as int64); a numpy input gives float64 / int64 numpy arrays. Empty inputs give correctly
shaped empty outputs.
"""
import numpy as np

from . import iou3d_nms_kernels as _k

_CRITERIA = {"union": 0, "iou": 0, "a": 1, "b": 2, "inter": 3}
#: below this many box pairs the single-threaded kernel is used (thread start-up costs more)
PARALLEL_MIN_PAIRS = 20000


def _use_threads(n_pairs):
    """Threaded kernels only for large problems and never inside a DataLoader worker process."""
    if n_pairs < PARALLEL_MIN_PAIRS:
        return False
    try:
        from torch.utils.data import get_worker_info
    except ImportError:
        return True
    return get_worker_info() is None


def _to_numpy(boxes, width=7):
    """(ndarray | Tensor) -> (float64 (N, width) ndarray, torch-like template or None)."""
    template = None
    if hasattr(boxes, "detach") and hasattr(boxes, "device"):  # torch.Tensor without importing torch
        template = boxes
        arr = boxes.detach().cpu().double().numpy()
    else:
        arr = np.asarray(boxes, dtype=np.float64)
    if arr.size == 0:
        arr = arr.reshape(0, width)
    if arr.ndim != 2 or arr.shape[1] < width:
        raise ValueError(f"expected boxes of shape (N, {width}), got {tuple(arr.shape)}")
    return np.ascontiguousarray(arr[:, :width]), template


def _like(result, template):
    """Return ``result`` as the kind of ``template`` (torch tensor on its device, or numpy)."""
    if template is None:
        return result
    import torch

    out = torch.from_numpy(np.ascontiguousarray(result))
    if out.is_floating_point():
        dtype = template.dtype if template.is_floating_point() else torch.float32
        out = out.to(dtype)
    return out.to(template.device)


def _overlap(boxes_a, boxes_b, use_3d, criterion):
    if criterion not in _CRITERIA:
        raise ValueError(f"criterion must be one of {sorted(_CRITERIA)}, got {criterion!r}")
    a, ta = _to_numpy(boxes_a)
    b, _ = _to_numpy(boxes_b)
    if len(a) == 0 or len(b) == 0:
        out = np.zeros((len(a), len(b)), dtype=np.float64)
    else:
        kernel = _k.boxes3d_overlap_matrix if _use_threads(len(a) * len(b)) else _k.boxes3d_overlap_matrix_serial
        out = kernel(a, b, use_3d, _CRITERIA[criterion])
    return _like(out, ta)


def boxes_bev_overlap_cpu(boxes_a, boxes_b, criterion="union"):
    """(N, 7), (M, 7) -> (N, M) BEV overlap.

    ``criterion``: ``"union"`` (IoU), ``"a"`` (intersection / area of a), ``"b"`` (intersection /
    area of b) or ``"inter"`` (the intersection area itself).
    """
    return _overlap(boxes_a, boxes_b, False, criterion)


def boxes_3d_overlap_cpu(boxes_a, boxes_b, criterion="union"):
    """(N, 7), (M, 7) -> (N, M) 3D overlap; ``criterion`` as in :func:`boxes_bev_overlap_cpu`
    with volumes instead of areas."""
    return _overlap(boxes_a, boxes_b, True, criterion)


def boxes_bev_iou_cpu(boxes_a, boxes_b):
    """(N, 7), (M, 7) -> (N, M) rotated bird's-eye-view IoU."""
    return _overlap(boxes_a, boxes_b, False, "union")


def boxes_iou3d_cpu(boxes_a, boxes_b):
    """(N, 7), (M, 7) -> (N, M) 3D IoU (BEV intersection x z-overlap / union volume)."""
    return _overlap(boxes_a, boxes_b, True, "union")


def boxes_bev_inter_area_cpu(bev_a, bev_b):
    """(N, 5), (M, 5) BEV rectangles ``[cx, cy, dx, dy, heading]`` -> (N, M) intersection areas."""
    a, ta = _to_numpy(bev_a, width=5)
    b, _ = _to_numpy(bev_b, width=5)
    if len(a) == 0 or len(b) == 0:
        out = np.zeros((len(a), len(b)), dtype=np.float64)
    else:
        out = (_k.bev_inter_matrix if _use_threads(len(a) * len(b)) else _k.bev_inter_matrix_serial)(a, b)
    return _like(out, ta)


def nms_cpu(boxes, scores, thresh, pre_max_size=None, post_max_size=None):
    """Greedy rotated-BEV NMS.

    Boxes are visited by descending score (stable for ties, so equal scores keep input order);
    only the best ``pre_max_size`` are considered; a box is suppressed when its BEV IoU with a kept
    box is greater than ``thresh``; at most ``post_max_size`` indices are returned.
    Returns the kept indices into ``boxes`` (int64), best first.
    """
    b, tb = _to_numpy(boxes)
    if hasattr(scores, "detach"):
        s = scores.detach().cpu().double().numpy().reshape(-1)
    else:
        s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(s) != len(b):
        raise ValueError(f"{len(b)} boxes but {len(s)} scores")
    order = np.argsort(-s, kind="stable").astype(np.int64)
    if pre_max_size is not None:
        order = order[:pre_max_size]
    max_keep = -1 if post_max_size is None else int(post_max_size)
    if len(order) == 0 or max_keep == 0:
        keep = np.zeros(0, dtype=np.int64)
    else:
        bev = np.ascontiguousarray(b[:, [0, 1, 3, 4, 6]])
        keep = _k.nms_greedy(bev, order, float(thresh), max_keep)
    return _like(keep, tb)


# ----------------------------------------------------------------------------- device dispatch
def _on_accelerator(t):
    return hasattr(t, "device") and getattr(t.device, "type", "cpu") != "cpu"


def boxes_bev_iou(boxes_a, boxes_b):
    """BEV IoU where the boxes are: the numba kernel for CPU tensors and numpy arrays, torch operations on
    the device otherwise (:mod:`.iou3d_nms_torch`; same results), so a CUDA caller never copies to the host."""
    if _on_accelerator(boxes_a):
        from .iou3d_nms_torch import boxes_bev_iou as on_device

        return on_device(boxes_a, boxes_b)
    return boxes_bev_iou_cpu(boxes_a, boxes_b)


def boxes_iou3d(boxes_a, boxes_b):
    """3D IoU where the boxes are (see :func:`boxes_bev_iou`)."""
    if _on_accelerator(boxes_a):
        from .iou3d_nms_torch import boxes_iou3d as on_device

        return on_device(boxes_a, boxes_b)
    return boxes_iou3d_cpu(boxes_a, boxes_b)


def nms(boxes, scores, thresh, pre_max_size=None, post_max_size=None):
    """Greedy rotated-BEV NMS where the boxes are (see :func:`boxes_bev_iou`); kept indices, best first."""
    if _on_accelerator(boxes):
        from .iou3d_nms_torch import nms as on_device

        return on_device(boxes, scores, thresh, pre_max_size, post_max_size)
    return nms_cpu(boxes, scores, thresh, pre_max_size, post_max_size)
