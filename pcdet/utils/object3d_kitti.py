"""KITTI ``label_2`` files: parsing (with errors that name the file and line) and writing.

A label line has 15 columns (16 for results, the last one being the score)::

    type truncated occluded alpha left top right bottom h w l x y z rotation_y [score]

Locations are the bottom centre of the box in the rectified camera frame; h, w, l in metres.
"""
from pathlib import Path

import numpy as np

KITTI_CLASSES = ("Car", "Van", "Truck", "Pedestrian", "Person_sitting", "Cyclist", "Tram", "Misc", "DontCare")


class LabelError(ValueError):
    """A label (or result) file is missing or malformed; the message names the file and line."""


def _parse_lines(path, allow_score):
    path = Path(path)
    if not path.is_file():
        raise LabelError(f"label file not found: {path}")
    rows = []
    for lineno, line in enumerate(path.read_text().splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        n = len(parts)
        if n != 15 and not (allow_score and n == 16):
            want = "15 or 16" if allow_score else "15"
            raise LabelError(f"{path}:{lineno}: expected {want} columns, got {n}: {line[:80]!r}")
        try:
            nums = [float(v) for v in parts[1:]]
        except ValueError as err:
            raise LabelError(f"{path}:{lineno}: non-numeric field ({err})") from None
        rows.append((parts[0], nums))
    return rows


def get_label_anno(path, allow_score=True):
    """Read one label/result file into a dict of numpy arrays (OpenPCDet's ``annos`` layout).

    Keys: name (N,), truncated (N,), occluded (N,), alpha (N,), bbox (N, 4), dimensions (N, 3) as
    (l, h, w), location (N, 3), rotation_y (N,), score (N,) (zeros when the file has no score column).
    """
    rows = _parse_lines(path, allow_score)
    n = len(rows)
    arr = np.zeros((n, 15), dtype=np.float64)
    for i, (_, nums) in enumerate(rows):
        arr[i, : len(nums)] = nums
    hwl = arr[:, 7:10]
    return {
        "name": np.array([r[0] for r in rows], dtype="<U16"),
        "truncated": arr[:, 0].copy(),
        "occluded": arr[:, 1].astype(np.int64),
        "alpha": arr[:, 2].copy(),
        "bbox": arr[:, 3:7].copy(),
        "dimensions": hwl[:, [2, 0, 1]].copy(),  # (l, h, w), as OpenPCDet stores camera boxes
        "location": arr[:, 10:13].copy(),
        "rotation_y": arr[:, 13].copy(),
        "score": arr[:, 14].copy(),
    }


class Object3d:
    """One parsed label line (attribute names as in OpenPCDet)."""

    def __init__(self, cls_type, nums):
        self.cls_type = cls_type
        self.truncation = nums[0]
        self.occlusion = int(nums[1])
        self.alpha = nums[2]
        self.box2d = np.array(nums[3:7], dtype=np.float32)
        self.h, self.w, self.l = nums[7], nums[8], nums[9]
        self.loc = np.array(nums[10:13], dtype=np.float32)
        self.ry = nums[13]
        self.score = nums[14] if len(nums) > 14 else -1.0

    def __repr__(self):
        return f"Object3d({self.cls_type}, loc={self.loc.tolist()}, hwl=({self.h}, {self.w}, {self.l}), ry={self.ry})"


def get_objects_from_label(path):
    return [Object3d(name, nums) for name, nums in _parse_lines(path, allow_score=True)]


def format_label_line(name, truncated, occluded, alpha, bbox, hwl, loc, ry, score=None):
    """One KITTI label line (no newline). ``hwl`` = (h, w, l); ``loc`` = bottom centre (rect)."""
    fields = [name, "%.2f" % truncated, "%d" % occluded, "%.2f" % alpha]
    fields += ["%.2f" % v for v in bbox]
    fields += ["%.2f" % v for v in hwl]
    fields += ["%.2f" % v for v in loc]
    fields.append("%.2f" % ry)
    if score is not None:
        fields.append("%.4f" % score)
    return " ".join(fields)
