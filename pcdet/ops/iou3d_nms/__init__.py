"""Rotated 3D box overlaps and NMS on the CPU (numba); see ``iou3d_nms_utils`` for conventions."""
from .iou3d_nms_utils import (
    boxes_3d_overlap_cpu,
    boxes_bev_inter_area_cpu,
    boxes_bev_iou_cpu,
    boxes_bev_overlap_cpu,
    boxes_iou3d_cpu,
    nms_cpu,
)

__all__ = [
    "boxes_3d_overlap_cpu",
    "boxes_bev_inter_area_cpu",
    "boxes_bev_iou_cpu",
    "boxes_bev_overlap_cpu",
    "boxes_iou3d_cpu",
    "nms_cpu",
]
