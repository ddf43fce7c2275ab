"""Point-cloud operators on the CPU (numba): rotated box overlaps and NMS (``iou3d_nms``), points in
boxes (``points_in_boxes``)."""
