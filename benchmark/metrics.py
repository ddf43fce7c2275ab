"""Metric names the benchmark tables may use, with their units.

``METRICS`` maps a name to ``(unit, description)``; ``PATTERNS`` covers families of names
(``iou_<class>``, KITTI per-class APs). :func:`check_metric` raises for a name that is neither, so a
typo in a table file is an error naming the file and the row, not a silently empty column.
"""
import re

KITTI_AP_UNIT = "AP R40 (%)"

METRICS = {
    # KITTI detection (val, R40, IoU 0.7 car / 0.5 ped, cyc); mAP = mean of the 3 moderate APs
    "bev_map": (KITTI_AP_UNIT, "BEV mAP, mean of Car/Pedestrian/Cyclist moderate AP"),
    "3d_map": (KITTI_AP_UNIT, "3D mAP, mean of Car/Pedestrian/Cyclist moderate AP"),
    # model cost
    "gflops": ("GMACs", "multiply-accumulates of one forward (the papers' 'FLOPs'), sparse convolutions included"),
    "gflops_dense": ("GMACs", "multiply-accumulates of the dense layers only: what the papers' counter counts "
                              "(it counts sparse 3D convolutions as 0)"),
    "gflops_sparse": ("GMACs", "multiply-accumulates of the sparse 3D convolutions (from their rulebooks' "
                               "neighbour pairs; frame-dependent)"),
    "params_m": ("M", "parameters of the deployed model"),
    "latency_ms": ("ms", "forward latency of one frame (median)"),
    "speedup": ("x", "latency of the reference row / latency of this row"),
    # training cost
    "gpu_hours": ("h", "training time of the whole schedule"),
    "step_s": ("s", "one training step (forward + backward), median"),
    "epoch_s": ("s", "one training epoch"),
    "step_ratio_vs_featurekd": ("x", "step time / step time of plain feature KD on the same layer"),
    "knn_share": ("fraction", "KNN time / PointDistiller step time"),
    # nuScenes detection (val), printed x100 like the papers
    "nus_map": ("%", "nuScenes mAP"),
    "nds": ("%", "nuScenes detection score"),
    "mate": ("x100", "mean translation error"),
    "mase": ("x100", "mean scale error"),
    "maoe": ("x100", "mean orientation error"),
    "mave": ("x100", "mean velocity error"),
    "maae": ("x100", "mean attribute error"),
    # Waymo
    "l2_maph": ("%", "Waymo LEVEL_2 mAPH"),
    "l2_map": ("%", "Waymo LEVEL_2 mAP"),
    # segmentation
    "miou": ("%", "mean IoU over the classes (SemanticKITTI: all 19, an absent class counts 0)"),
    "miou_present": ("%", "mean IoU over the classes present in ground truth or predictions"),
}

PATTERNS = (
    (re.compile(r"^(bev|3d)_(car|ped|cyc)_(easy|moderate|hard)$"), KITTI_AP_UNIT, "KITTI AP of one class and difficulty"),
    (re.compile(r"^iou_[a-z0-9_]+$"), "%", "IoU of one class"),
)


def metric_unit(name):
    """Unit of a metric name; KeyError for unknown names."""
    if name in METRICS:
        return METRICS[name][0]
    for pattern, unit, _ in PATTERNS:
        if pattern.match(name):
            return unit
    raise KeyError(name)


def check_metric(name, where):
    try:
        return metric_unit(name)
    except KeyError:
        raise ValueError(f"{where}: unknown metric {name!r}; known: {sorted(METRICS)} and "
                         f"the patterns {[p.pattern for p, _, _ in PATTERNS]} (benchmark/metrics.py)") from None
