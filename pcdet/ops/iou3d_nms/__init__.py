"""Rotated 3D box overlaps and NMS: numba kernels on the CPU (``*_cpu``), torch operations on other devices
(``iou3d_nms_torch``); ``boxes_bev_iou``, ``boxes_iou3d`` and ``nms`` pick by the boxes' device. See
``iou3d_nms_utils`` for conventions."""
from .iou3d_nms_utils import (
    boxes_3d_overlap_cpu,
    boxes_bev_inter_area_cpu,
    boxes_bev_iou,
    boxes_bev_iou_cpu,
    boxes_bev_overlap_cpu,
    boxes_iou3d,
    boxes_iou3d_cpu,
    nms,
    nms_cpu,
)

__all__ = [
    "boxes_bev_iou",
    "boxes_iou3d",
    "nms",
    "boxes_3d_overlap_cpu",
    "boxes_bev_inter_area_cpu",
    "boxes_bev_iou_cpu",
    "boxes_bev_overlap_cpu",
    "boxes_iou3d_cpu",
    "nms_cpu",
]
