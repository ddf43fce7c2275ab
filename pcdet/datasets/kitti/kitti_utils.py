"""KITTI helpers for the dataset pipeline: image size, camera field of view, difficulty, result lines.

Owns:

* :func:`read_png_size` - (H, W) from a PNG header (no image decoding).
* :data:`DEFAULT_IMAGE_SHAPE` - (375, 1242), KITTI's usual image-2 size, used when a frame has no
  PNG (the image size only bounds the field-of-view filter; sizes in KITTI vary between 1224 and
  1242 pixels in width and 370 and 376 in height).
* :func:`get_fov_flag` - points whose projection into image 2 (``P2``) lies inside the image
  and in front of the camera.
* :func:`get_difficulty` - KITTI's Easy / Moderate / Hard (0 / 1 / 2, -1 = none) per object from
  its 2D box height, truncation and occlusion (the thresholds of the official devkit).
* :func:`boxes_lidar_to_kitti_anno` / :func:`write_kitti_result` - predictions in the LiDAR frame to
  KITTI annotation dicts and 16-column result files (the 16th column is the score).
"""
import struct
from pathlib import Path

import numpy as np

from pcdet.utils import box_utils, common_utils
from pcdet.utils.object3d_kitti import format_label_line

DEFAULT_IMAGE_SHAPE = (375, 1242)  # (H, W)
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# Official KITTI thresholds: min 2D box height (px), max truncation, max occlusion level.
DIFFICULTY_RULES = ((40.0, 0.15, 0), (25.0, 0.30, 1), (25.0, 0.50, 2))


class ImageFileError(ValueError):
    """An image file is not a readable PNG; the message names the file."""


def read_png_size(path):
    """(H, W) of a PNG file read from its IHDR chunk."""
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(24)
    if len(head) < 24 or head[:8] != _PNG_SIGNATURE or head[12:16] != b"IHDR":
        raise ImageFileError(f"{path}: not a PNG file (cannot read the image size)")
    width, height = struct.unpack(">II", head[16:24])
    return int(height), int(width)


def get_fov_flag(pts_rect, img_shape, calib):
    """(N,) bool: rect-frame points that project inside image 2 of size ``img_shape`` (H, W), depth >= 0."""
    return _inside_image(*calib.rect_to_img(pts_rect), img_shape)


def get_fov_flag_lidar(pts_lidar, img_shape, calib):
    """``get_fov_flag`` for LiDAR-frame points (one fused projection)."""
    return _inside_image(*calib.lidar_to_img(pts_lidar), img_shape)


def _inside_image(uv, depth, img_shape):
    with np.errstate(invalid="ignore"):
        in_u = (uv[:, 0] >= 0) & (uv[:, 0] < img_shape[1])
        in_v = (uv[:, 1] >= 0) & (uv[:, 1] < img_shape[0])
    return in_u & in_v & (depth >= 0)


def get_difficulty(bbox, truncated, occluded):
    """(N,) int32 difficulty from (N, 4) 2D boxes, (N,) truncation and (N,) occlusion levels.

    0 easy, 1 moderate, 2 hard, -1 none; the box height is ``bottom - top`` as in the official devkit.
    """
    bbox = np.asarray(bbox, dtype=np.float64).reshape(-1, 4)
    height = bbox[:, 3] - bbox[:, 1]
    truncated = np.asarray(truncated, dtype=np.float64)
    occluded = np.asarray(occluded)
    out = np.full(len(bbox), -1, dtype=np.int32)
    for level in range(len(DIFFICULTY_RULES) - 1, -1, -1):  # hardest first, easier levels overwrite
        min_h, max_trunc, max_occ = DIFFICULTY_RULES[level]
        ok = (height >= min_h) & (truncated <= max_trunc) & (occluded <= max_occ)
        out[ok] = level
    return out


def empty_anno():
    return {
        "name": np.zeros(0, dtype="<U16"),
        "truncated": np.zeros(0),
        "occluded": np.zeros(0),
        "alpha": np.zeros(0),
        "bbox": np.zeros((0, 4)),
        "dimensions": np.zeros((0, 3)),
        "location": np.zeros((0, 3)),
        "rotation_y": np.zeros(0),
        "score": np.zeros(0),
        "boxes_lidar": np.zeros((0, 7)),
    }


def boxes_lidar_to_kitti_anno(boxes_lidar, scores, labels, class_names, calib, image_shape):
    """Predictions (LiDAR boxes (N, 7), scores (N,), 1-based labels (N,)) -> a KITTI annotation dict.

    Keys as in ``object3d_kitti.get_label_anno`` (dimensions as (l, h, w)) plus ``boxes_lidar``.
    ``truncated``/``occluded`` are 0; ``alpha`` is the observation angle ``-atan2(-y, x) + ry``.
    ``rotation_y`` and ``alpha`` are wrapped into the KITTI range ``[-pi, pi)`` (the head decodes
    headings in ``[offset, offset + 2 pi)``).
    """
    boxes_lidar = np.asarray(boxes_lidar, dtype=np.float64).reshape(-1, 7)
    if len(boxes_lidar) == 0:
        return empty_anno()
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    cam = box_utils.boxes3d_lidar_to_kitti_camera(boxes_lidar, calib)
    cam[:, 6] = common_utils.limit_period(cam[:, 6], offset=0.5, period=2 * np.pi)
    alpha = common_utils.limit_period(-np.arctan2(-boxes_lidar[:, 1], boxes_lidar[:, 0]) + cam[:, 6], 0.5, 2 * np.pi)
    bbox = box_utils.boxes3d_kitti_camera_to_imageboxes(cam, calib, image_shape=image_shape)
    return {
        "name": np.array(class_names, dtype="<U16")[labels - 1],
        "truncated": np.zeros(len(cam)),
        "occluded": np.zeros(len(cam)),
        "alpha": alpha,
        "bbox": bbox,
        "dimensions": cam[:, 3:6],
        "location": cam[:, 0:3],
        "rotation_y": cam[:, 6],
        "score": scores,
        "boxes_lidar": boxes_lidar,
    }


def write_kitti_result(path, anno):
    """Write an annotation dict as a KITTI result file (15 label columns + score)."""
    lines = []
    for i in range(len(anno["name"])):
        l, h, w = anno["dimensions"][i]
        lines.append(
            format_label_line(
                anno["name"][i],
                anno["truncated"][i],
                anno["occluded"][i],
                anno["alpha"][i],
                anno["bbox"][i],
                (h, w, l),
                anno["location"][i],
                anno["rotation_y"][i],
                score=anno["score"][i],
            )
        )
    Path(path).write_text("".join(line + "\n" for line in lines))
