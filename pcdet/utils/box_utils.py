"""Box conventions and conversions (numpy unless stated).

* LiDAR boxes: ``(N, 7)`` = ``[x, y, z, dx, dy, dz, heading]``; (x, y, z) is the box centre,
  dx/dy/dz the length/width/height along the box's own axes, heading the yaw around +z
  measured from +x.
* KITTI camera boxes: ``(N, 7)`` = ``[x, y, z, l, h, w, ry]``; (x, y, z) is the bottom centre in
  the rectified camera frame, ``ry`` the rotation around the camera's +y (down) axis.
"""
import numpy as np

from pcdet.utils.common_utils import rotate_points_along_z

# Unit-box corner template: 4 bottom corners counter-clockwise, then the 4 top corners.
_CORNER_SIGNS = np.array(
    [[1, 1, -1], [1, -1, -1], [-1, -1, -1], [-1, 1, -1], [1, 1, 1], [1, -1, 1], [-1, -1, 1], [-1, 1, 1]],
    dtype=np.float64,
) / 2.0


def boxes_to_corners_3d(boxes3d):
    """(N, 7) LiDAR boxes -> (N, 8, 3) corners (bottom face 0-3, top face 4-7)."""
    boxes3d = np.asarray(boxes3d, dtype=np.float64)
    corners = boxes3d[:, None, 3:6] * _CORNER_SIGNS[None]
    corners = rotate_points_along_z(corners, boxes3d[:, 6])
    return corners + boxes3d[:, None, 0:3]


def boxes3d_kitti_camera_to_lidar(boxes3d_camera, calib):
    """(N, 7) KITTI camera boxes ``[x, y, z, l, h, w, ry]`` -> (N, 7) LiDAR boxes."""
    boxes = np.asarray(boxes3d_camera, dtype=np.float64).reshape(-1, 7)
    xyz = calib.rect_to_lidar(boxes[:, 0:3])
    l, h, w, r = boxes[:, 3], boxes[:, 4], boxes[:, 5], boxes[:, 6]
    xyz[:, 2] += h / 2.0
    return np.concatenate([xyz, l[:, None], w[:, None], h[:, None], (-(r + np.pi / 2))[:, None]], axis=1)


def boxes3d_lidar_to_kitti_camera(boxes3d_lidar, calib):
    """(N, 7) LiDAR boxes -> (N, 7) KITTI camera boxes ``[x, y, z, l, h, w, ry]``."""
    boxes = np.asarray(boxes3d_lidar, dtype=np.float64).reshape(-1, 7)
    xyz = boxes[:, 0:3].copy()
    l, w, h, r = boxes[:, 3], boxes[:, 4], boxes[:, 5], boxes[:, 6]
    xyz[:, 2] -= h / 2.0
    xyz_cam = calib.lidar_to_rect(xyz)
    return np.concatenate([xyz_cam, l[:, None], h[:, None], w[:, None], (-r - np.pi / 2)[:, None]], axis=1)


def boxes3d_to_corners3d_kitti_camera(boxes3d):
    """(N, 7) KITTI camera boxes -> (N, 8, 3) corners in the rect frame (bottom face first)."""
    boxes = np.asarray(boxes3d, dtype=np.float64).reshape(-1, 7)
    l, h, w, ry = boxes[:, 3], boxes[:, 4], boxes[:, 5], boxes[:, 6]
    x_c = np.stack([l / 2, l / 2, -l / 2, -l / 2, l / 2, l / 2, -l / 2, -l / 2], axis=1)
    z_c = np.stack([w / 2, -w / 2, -w / 2, w / 2, w / 2, -w / 2, -w / 2, w / 2], axis=1)
    y_c = np.concatenate([np.zeros((len(boxes), 4)), -np.repeat(h[:, None], 4, axis=1)], axis=1)
    c, s = np.cos(ry)[:, None], np.sin(ry)[:, None]
    x = c * x_c + s * z_c
    z = -s * x_c + c * z_c
    return np.stack([x, y_c, z], axis=2) + boxes[:, None, 0:3]


def boxes3d_kitti_camera_to_imageboxes(boxes3d, calib, image_shape=None):
    """(N, 7) KITTI camera boxes -> (N, 4) image boxes [left, top, right, bottom] via ``calib.P2``.

    Corners behind the camera are not handled specially (KITTI's labelled objects are in front);
    ``image_shape`` = (H, W) clips to the image.
    """
    corners = boxes3d_to_corners3d_kitti_camera(boxes3d)
    uv, _ = calib.rect_to_img(corners.reshape(-1, 3))
    uv = uv.reshape(-1, 8, 2)
    boxes2d = np.concatenate([uv.min(axis=1), uv.max(axis=1)], axis=1)
    if image_shape is not None:
        h, w = image_shape
        boxes2d[:, [0, 2]] = np.clip(boxes2d[:, [0, 2]], 0, w - 1)
        boxes2d[:, [1, 3]] = np.clip(boxes2d[:, [1, 3]], 0, h - 1)
    return boxes2d


def points_in_boxes_mask_reference(points, boxes3d):
    """Brute-force reference: (N, 3+) points, (M, 7) LiDAR boxes -> (M, N) bool mask.

    A point is inside when its coordinates in the box frame satisfy |u| <= dx/2, |v| <= dy/2,
    |w| <= dz/2. O(M * N) memory: for tests and small inputs only.
    """
    pts = np.asarray(points, dtype=np.float64)[:, :3]
    boxes = np.asarray(boxes3d, dtype=np.float64).reshape(-1, 7)
    d = pts[None, :, :] - boxes[:, None, 0:3]
    c, s = np.cos(boxes[:, 6])[:, None], np.sin(boxes[:, 6])[:, None]
    u = d[..., 0] * c + d[..., 1] * s
    v = -d[..., 0] * s + d[..., 1] * c
    return (
        (np.abs(u) <= boxes[:, 3:4] / 2) & (np.abs(v) <= boxes[:, 4:5] / 2) & (np.abs(d[..., 2]) <= boxes[:, 5:6] / 2)
    )


def mask_boxes_outside_range_numpy(boxes, limit_range, min_num_corners=1, use_center_to_filter=True):
    """(N, 7+) LiDAR boxes -> (N,) bool mask of the boxes to keep for ``limit_range``.

    ``limit_range`` = ``[x_min, y_min, z_min, x_max, y_max, z_max]``. With ``use_center_to_filter``
    a box is kept when its centre lies in the range (closed bounds); otherwise when at least
    ``min_num_corners`` of its 8 corners lie inside the range in BEV (x, y only).
    """
    boxes = np.asarray(boxes)
    if boxes.size == 0:
        return np.zeros(0, dtype=bool)
    limit_range = np.asarray(limit_range, dtype=np.float64)
    if use_center_to_filter:
        centers = boxes[:, 0:3]
        return ((centers >= limit_range[0:3]) & (centers <= limit_range[3:6])).all(axis=-1)
    corners = boxes_to_corners_3d(boxes[:, 0:7])[:, :, 0:2]
    inside = ((corners >= limit_range[0:2]) & (corners <= limit_range[3:5])).all(axis=2)
    return inside.sum(axis=1) >= min_num_corners


def enlarge_box3d(boxes3d, extra_width=(0.0, 0.0, 0.0)):
    """Copy of (N, 7+) LiDAR boxes with ``extra_width`` (3,) added to (dx, dy, dz); centre kept."""
    large = np.array(boxes3d, copy=True)
    if not np.issubdtype(large.dtype, np.floating):
        large = large.astype(np.float64)
    large[:, 3:6] += np.asarray(extra_width, dtype=large.dtype)[None, :]
    return large


def remove_points_in_boxes3d(points, boxes3d):
    """(N, 3+C) points with those inside any of the (M, 7+) LiDAR boxes removed."""
    from pcdet.ops.points_in_boxes import points_in_boxes_index

    if len(boxes3d) == 0 or len(points) == 0:
        return points
    return points[points_in_boxes_index(points[:, 0:3], boxes3d) < 0]
