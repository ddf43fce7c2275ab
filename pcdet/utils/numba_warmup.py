"""numba's first-run compilation: warm its on-disk cache once, and say so when a run has to compile.

Owns :func:`warm` (``python -m pcdet.utils.numba_warmup``, run by ``make setup``), :func:`kernels_cached`
and :func:`announce_compile`.

Every numba kernel of the package is compiled with ``cache=True``: the first process that calls it
compiles it (the KITTI evaluator's kernels take about 30 s on a 2-core CPU) and writes the machine
code beside the source (``__pycache__/*.nbi|nbc``, or numba's user cache folder when the package
folder is read-only); later processes load it in a fraction of a second. :func:`warm` calls each
kernel family once on a tiny input of the dtypes real runs use, so that the cache is filled during
set-up instead of during a user's first evaluation or demo. Where a run would still compile,
:func:`announce_compile` prints one line first, so a silent 30 s does not look like a hang.
"""
import sys
import time

_ANNOUNCED = set()


def kernels_cached(*dispatchers):
    """True when numba's on-disk cache holds a current entry for every dispatcher (its index exists
    and matches the source file's stamp). Reads numba's cache index (a private interface); when that
    cannot be read the answer is False ("may compile")."""
    for d in dispatchers:
        try:
            if not d._cache._cache_file._load_index():
                return False
        except (AttributeError, OSError, EOFError, ValueError, TypeError):
            return False
    return True


def announce_compile(what, *dispatchers, seconds="about 30 s", stream=None):
    """Print once per process that ``what``'s numba kernels are being compiled, if they are not cached."""
    if what in _ANNOUNCED or kernels_cached(*dispatchers):
        return False
    _ANNOUNCED.add(what)
    print(f"[numba] compiling the {what} kernels ({seconds}, first run only: the machine code is cached for "
          f"later runs; `make setup` compiles them ahead)", file=stream or sys.stderr, flush=True)
    return True


def _kitti_eval():
    import numpy as np

    from pcdet.datasets.kitti import eval as kitti_eval

    def anno(score):
        return {"name": np.array(["Car", "DontCare"]), "truncated": np.zeros(2), "occluded": np.zeros(2, np.int64),
                "alpha": np.zeros(2), "bbox": np.array([[100.0, 100, 300, 200], [500, 100, 600, 200]]),
                "dimensions": np.array([[3.9, 1.5, 1.6], [-1, -1, -1.0]]),
                "location": np.array([[0.0, 1.6, 10], [-1000, -1000, -1000.0]]), "rotation_y": np.zeros(2),
                "score": np.array([score, score])}

    kitti_eval.evaluate([anno(0.0)], [anno(0.9)], kitti_eval.CLASS_NAMES)


def _box_ops():
    import torch

    from pcdet.ops.iou3d_nms import boxes_bev_iou_cpu, boxes_iou3d_cpu, nms_cpu
    from pcdet.ops.points_in_boxes import points_in_boxes_cpu, points_in_boxes_index

    boxes = torch.tensor([[0.0, 0, 0, 4, 2, 1.5, 0.1], [0.5, 0.2, 0, 4, 2, 1.5, 0.3]])
    boxes_iou3d_cpu(boxes, boxes)
    boxes_bev_iou_cpu(boxes, boxes)
    nms_cpu(boxes, torch.tensor([0.9, 0.8]), 0.5)
    points = torch.rand(64, 3) * 4 - 2
    points_in_boxes_cpu(points, boxes)
    points_in_boxes_index(points, boxes)


def _kd_kernels():
    import torch

    from pcdet.kd.graph_ops import EdgeConvAdapter, EdgeGraph, graph_distill_loss
    from pcdet.kd.knn import knn_per_sample

    torch.manual_seed(0)
    x_t, x_s = torch.randn(40, 8), torch.randn(40, 4, requires_grad=True)
    graph = EdgeGraph(*knn_per_sample(x_t[:, :3].contiguous(), [0, 25, 40], 8))
    phi = torch.ones(40)
    for fused in (None, False):  # the fused CPU kernels and the composed edge kernels
        loss = graph_distill_loss(x_t, x_s, graph, EdgeConvAdapter(8, 8), EdgeConvAdapter(4, 8), phi, fused=fused)
        loss.backward()


def _synthetic_sensor():
    from pcdet.datasets.synthetic.generator import FrameGenerator

    FrameGenerator(0).generate(0)


# the box-overlap family first: its kernels (rect_inter_area) are also called by the KITTI evaluator's
STEPS = (("box overlap / NMS / points-in-box", _box_ops), ("KITTI evaluator", _kitti_eval),
         ("distillation graph (KNN, edge losses)", _kd_kernels), ("synthetic LiDAR ray caster", _synthetic_sensor))


def _timed(fn):
    """Run one warm-up step (in a worker process of :func:`warm`) and return its seconds."""
    _ANNOUNCED.add("KITTI evaluation")  # warm() announces every step itself
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def warm(steps=STEPS, stream=None, jobs=1):
    """Compile (or load) every kernel family once; prints one line per family with its time.

    ``jobs`` > 1 compiles in that many worker processes (numba compiles on one core): the first family
    alone, since later families call some of its kernels (two processes writing one kernel's cache
    index at once could lose an entry), then the others side by side. ``jobs=1`` runs them here, one
    after the other. The command line uses one process per CPU core, at most one per family.
    """
    stream = stream or sys.stdout
    _ANNOUNCED.add("KITTI evaluation")  # this function announces every step itself
    total = time.perf_counter()
    jobs = max(1, min(int(jobs), len(steps)))
    if jobs == 1:
        for name, fn in steps:
            print(f"[numba] {name} ...", end=" ", file=stream, flush=True)
            print(f"{_timed(fn):.1f} s", file=stream, flush=True)
    else:
        import concurrent.futures
        import multiprocessing

        print(f"[numba] warming {len(steps)} kernel families in {jobs} processes (the first one alone): "
              + ", ".join(name for name, _ in steps), file=stream, flush=True)
        with concurrent.futures.ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            for group in (steps[:1], steps[1:]):
                futures = {pool.submit(_timed, fn): name for name, fn in group}
                for fut in concurrent.futures.as_completed(futures):
                    print(f"[numba] {futures[fut]}: {fut.result():.1f} s", file=stream, flush=True)
    from pcdet.datasets.kitti import eval as kitti_eval

    where = getattr(getattr(kitti_eval._eval_all, "_cache", None), "_cache_path", "numba's cache folder")
    print(f"[numba] kernels ready in {time.perf_counter() - total:.1f} s (cached machine code, e.g. in {where})",
          file=stream, flush=True)


if __name__ == "__main__":
    import os

    # through the package module, not __main__: the worker processes then run (and mark as announced)
    # the functions of the module the kernels' own announcements read
    from pcdet.utils import numba_warmup

    numba_warmup.warm(jobs=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))
