"""SemanticKITTI's label definitions, as the official semantic-kitti-api's ``config/semantic-kitti.yaml``
defines them: the 34 raw ids and their names, ``learning_map`` (raw id -> learning class 0..19, 0 =
ignored), ``learning_map_inv`` (learning class -> raw id, for submissions), the 19 learning class
names in order and the colour map (BGR, as the api's visualiser uses it).

Owns :func:`to_learning`, :func:`to_raw`, :func:`read_label_file`, :func:`write_label_file` and
:class:`LabelFileError`. A ``.label`` file is uint32 per point: the semantic id in the lower 16 bits,
the instance id in the upper 16.
"""
from pathlib import Path

import numpy as np

#: raw id -> name (semantic-kitti.yaml ``labels``)
RAW_LABELS = {
    0: "unlabeled", 1: "outlier", 10: "car", 11: "bicycle", 13: "bus", 15: "motorcycle", 16: "on-rails",
    18: "truck", 20: "other-vehicle", 30: "person", 31: "bicyclist", 32: "motorcyclist", 40: "road", 44: "parking",
    48: "sidewalk", 49: "other-ground", 50: "building", 51: "fence", 52: "other-structure", 60: "lane-marking",
    70: "vegetation", 71: "trunk", 72: "terrain", 80: "pole", 81: "traffic-sign", 99: "other-object",
    252: "moving-car", 253: "moving-bicyclist", 254: "moving-person", 255: "moving-motorcyclist",
    256: "moving-on-rails", 257: "moving-bus", 258: "moving-truck", 259: "moving-other-vehicle",
}
#: raw id -> learning class (semantic-kitti.yaml ``learning_map``)
LEARNING_MAP = {
    0: 0, 1: 0, 10: 1, 11: 2, 13: 5, 15: 3, 16: 5, 18: 4, 20: 5, 30: 6, 31: 7, 32: 8, 40: 9, 44: 10, 48: 11, 49: 12,
    50: 13, 51: 14, 52: 0, 60: 9, 70: 15, 71: 16, 72: 17, 80: 18, 81: 19, 99: 0, 252: 1, 253: 7, 254: 6, 255: 8,
    256: 5, 257: 5, 258: 4, 259: 5,
}
#: learning class -> raw id (semantic-kitti.yaml ``learning_map_inv``)
LEARNING_MAP_INV = {0: 0, 1: 10, 2: 11, 3: 15, 4: 18, 5: 20, 6: 30, 7: 31, 8: 32, 9: 40, 10: 44, 11: 48, 12: 49,
                    13: 50, 14: 51, 15: 70, 16: 71, 17: 72, 18: 80, 19: 81}
IGNORE_CLASS = 0
NUM_CLASSES = 20  # learning classes, the ignored 0 included
#: learning class 1..19 -> name, in order (the names of the raw ids of learning_map_inv)
CLASS_NAMES = [RAW_LABELS[LEARNING_MAP_INV[c]] for c in range(1, NUM_CLASSES)]
#: raw id -> BGR colour (semantic-kitti.yaml ``color_map``)
COLOR_MAP_BGR = {
    0: (0, 0, 0), 1: (0, 0, 255), 10: (245, 150, 100), 11: (245, 230, 100), 13: (250, 80, 100), 15: (150, 60, 30),
    16: (255, 0, 0), 18: (180, 30, 80), 20: (255, 0, 0), 30: (30, 30, 255), 31: (200, 40, 255), 32: (90, 30, 150),
    40: (255, 0, 255), 44: (255, 150, 255), 48: (75, 0, 75), 49: (75, 0, 175), 50: (0, 200, 255), 51: (50, 120, 255),
    52: (0, 150, 255), 60: (170, 255, 150), 70: (0, 175, 0), 71: (0, 60, 135), 72: (80, 240, 150), 80: (150, 240, 255),
    81: (0, 0, 255), 99: (255, 255, 50), 252: (245, 150, 100), 253: (200, 40, 255), 254: (30, 30, 255),
    255: (90, 30, 150), 256: (255, 0, 0), 257: (250, 80, 100), 258: (180, 30, 80), 259: (255, 0, 0),
}

_LUT = np.full(1 << 16, -1, dtype=np.int64)
for _raw, _cls in LEARNING_MAP.items():
    _LUT[_raw] = _cls
_INV = np.array([LEARNING_MAP_INV[c] for c in range(NUM_CLASSES)], dtype=np.uint32)


class LabelFileError(ValueError):
    """A SemanticKITTI label file is missing, malformed or holds an unknown raw id; names the file."""


def to_learning(raw, source="labels"):
    """Raw semantic ids (any integer array; the lower 16 bits are used) -> learning classes 0..19.
    An id outside the 34 of SemanticKITTI raises :class:`LabelFileError` naming ``source`` and the ids."""
    sem = np.asarray(raw).astype(np.int64) & 0xFFFF
    out = _LUT[sem]
    if (out < 0).any():
        bad = np.unique(sem[out < 0])[:10].tolist()
        raise LabelFileError(f"{source}: unknown SemanticKITTI raw id(s) {bad} (known: {sorted(LEARNING_MAP)})")
    return out


def to_raw(learning):
    """Learning classes 0..19 -> raw ids (uint32; the submission format)."""
    learning = np.asarray(learning).astype(np.int64)
    if learning.size and (learning.min() < 0 or learning.max() >= NUM_CLASSES):
        raise ValueError(f"learning classes must be in 0..{NUM_CLASSES - 1}, got {learning.min()}..{learning.max()}")
    return _INV[learning]


def read_label_file(path, num_points=None):
    """``(semantic raw ids, instance ids)`` of a ``.label`` file; ``num_points`` (the scan's) is checked."""
    path = Path(path)
    if not path.is_file():
        raise LabelFileError(f"label file not found: {path}")
    size = path.stat().st_size
    if size % 4:
        raise LabelFileError(f"{path}: size {size} bytes is not a multiple of 4 (uint32 per point)")
    data = np.fromfile(path, dtype=np.uint32)
    if num_points is not None and len(data) != num_points:
        raise LabelFileError(f"{path}: {len(data)} labels for a scan of {num_points} points")
    return data & 0xFFFF, data >> 16


def write_label_file(path, semantic_raw, instance=None):
    """Write raw semantic ids (and instance ids) as a ``.label`` file."""
    sem = np.asarray(semantic_raw).astype(np.uint32) & 0xFFFF
    inst = np.zeros_like(sem) if instance is None else (np.asarray(instance).astype(np.uint32) & 0xFFFF)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ((inst << 16) | sem).astype(np.uint32).tofile(path)
    return path


def colours_rgb(learning):
    """(N, 3) RGB in [0, 1] of learning classes, through their raw ids' colours."""
    table = np.array([COLOR_MAP_BGR[LEARNING_MAP_INV[c]][::-1] for c in range(NUM_CLASSES)], dtype=np.float64) / 255.0
    return table[np.asarray(learning, dtype=np.int64)]
