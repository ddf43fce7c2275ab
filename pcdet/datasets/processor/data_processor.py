"""Point / voxel processing steps named in a ``DATA_PROCESSOR`` config list.

Owns :class:`DataProcessor` and the steps, registered in :data:`pcdet.datasets.registries.PROCESSORS`.
Each list entry is a mapping with ``NAME`` and the step's keys (unknown keys raise
:class:`pcdet.config.ConfigKeyError`). Steps that drop or reorder points apply the same selection to
every point-aligned key (:func:`pcdet.datasets.data_contract.take_points`):

* ``mask_points_and_boxes_outside_range``: keeps points with x, y, z in
  ``[range_min, range_max)`` (so every kept point falls in a voxel); in training also drops
  ``gt_boxes`` whose centre is outside the range (``REMOVE_OUTSIDE_BOXES``, default True;
  ``USE_CENTER_TO_FILTER`` False switches to "at least one BEV corner inside").
* ``shuffle_points``: ``SHUFFLE_ENABLED: {train: bool, test: bool}``.
* ``transform_points_to_voxels``: spconv's ``PointToVoxel`` with ``VOXEL_SIZE`` (3,),
  ``MAX_POINTS_PER_VOXEL``, ``MAX_NUMBER_OF_VOXELS: {train: int, test: int}`` and optional
  ``KEY_SUFFIX`` (default ""). Writes ``voxels<suffix>`` (V, P, C) float32,
  ``voxel_coords<suffix>`` (V, 3) int32 in (z, y, x) order and ``voxel_num_points<suffix>`` (V,)
  int32. The step may appear several times with different voxel settings and suffixes (e.g. a
  distillation teacher with its own voxel size uses ``KEY_SUFFIX: _tea``); each one's settings
  are in :attr:`DataProcessor.voxel_settings` keyed by suffix.

Each step class declares ``OUTPUT_KEYS`` (the base keys it writes); :attr:`DataProcessor.keys_with_suffix`
lists, per ``KEY_SUFFIX``, the keys written under that suffix (the KD wrapper feeds a teacher with
the ``_tea`` ones).

:attr:`DataProcessor.grid_size` (x, y, z cell counts, int64), :attr:`voxel_size` and
:attr:`point_cloud_range` describe the unsuffixed voxeliser (the model input).
"""
import importlib

import numpy as np
import torch

from pcdet.config import ConfigError, check_keys
from pcdet.datasets.data_contract import COLLATE_RULES, register_collate_rule, take_points
from pcdet.datasets.registries import PROCESSORS
from pcdet.utils import box_utils


def mask_points_by_range(points, limit_range):
    """(N,) bool: x, y, z in ``[limit_range[0:3], limit_range[3:6])``."""
    lo, hi = np.asarray(limit_range[0:3]), np.asarray(limit_range[3:6])
    return ((points[:, 0:3] >= lo) & (points[:, 0:3] < hi)).all(axis=1)


def _mode_value(value, mode, where):
    if isinstance(value, dict):
        if mode not in value:
            raise ConfigError(f"{where}: needs a value for mode {mode!r} (has {sorted(value)})")
        return value[mode]
    return value


def _point_to_voxel_class():
    """spconv's ``PointToVoxel``, reached through :mod:`pcdet.utils.spconv_utils` (which installs its CPU fixes)."""
    from pcdet.utils import spconv_utils

    spconv = spconv_utils.spconv
    utils = getattr(spconv, "utils", None)
    if utils is None:  # ``spconv.pytorch.utils`` is not imported by ``spconv.pytorch`` itself
        utils = importlib.import_module(spconv.__name__ + ".utils")
        spconv_utils.install()  # idempotent; covers the module just loaded
    return utils.PointToVoxel


@PROCESSORS.register("mask_points_and_boxes_outside_range")
class MaskPointsAndBoxesOutsideRange:
    allowed = {"NAME", "REMOVE_OUTSIDE_BOXES", "USE_CENTER_TO_FILTER", "MIN_NUM_CORNERS"}

    def __init__(self, cfg, where, processor):
        check_keys(cfg, self.allowed, where)
        self.processor = processor
        self.remove_outside_boxes = bool(cfg.get("REMOVE_OUTSIDE_BOXES", True))
        self.use_center = bool(cfg.get("USE_CENTER_TO_FILTER", True))
        self.min_num_corners = int(cfg.get("MIN_NUM_CORNERS", 1))

    def __call__(self, data_dict):
        pcr = self.processor.point_cloud_range
        data_dict = take_points(data_dict, mask_points_by_range(data_dict["points"], pcr))
        boxes = data_dict.get("gt_boxes")
        if boxes is not None and self.remove_outside_boxes and self.processor.training and len(boxes):
            keep = box_utils.mask_boxes_outside_range_numpy(
                boxes, pcr, min_num_corners=self.min_num_corners, use_center_to_filter=self.use_center
            )
            data_dict["gt_boxes"] = boxes[keep]
            if "gt_names" in data_dict and len(data_dict["gt_names"]) == len(keep):
                data_dict["gt_names"] = data_dict["gt_names"][keep]
        return data_dict


@PROCESSORS.register("shuffle_points")
class ShufflePoints:
    allowed = {"NAME", "SHUFFLE_ENABLED"}

    def __init__(self, cfg, where, processor):
        check_keys(cfg, self.allowed, where)
        self.enabled = bool(_mode_value(cfg.get("SHUFFLE_ENABLED", {"train": True, "test": False}), processor.mode, where))

    def __call__(self, data_dict):
        if self.enabled:
            data_dict = take_points(data_dict, np.random.permutation(len(data_dict["points"])))
        return data_dict


@PROCESSORS.register("transform_points_to_voxels")
class TransformPointsToVoxels:
    allowed = {"NAME", "VOXEL_SIZE", "MAX_POINTS_PER_VOXEL", "MAX_NUMBER_OF_VOXELS", "KEY_SUFFIX"}
    OUTPUT_KEYS = ("voxels", "voxel_coords", "voxel_num_points")

    def __init__(self, cfg, where, processor):
        check_keys(cfg, self.allowed, where)
        for key in ("VOXEL_SIZE", "MAX_POINTS_PER_VOXEL", "MAX_NUMBER_OF_VOXELS"):
            if key not in cfg:
                raise ConfigError(f"{where}: missing required key {key!r}")
        self.suffix = str(cfg.get("KEY_SUFFIX", "") or "")
        self.voxel_size = np.asarray(cfg["VOXEL_SIZE"], dtype=np.float32)
        if self.voxel_size.shape != (3,) or (self.voxel_size <= 0).any():
            raise ConfigError(f"{where}: VOXEL_SIZE must be 3 positive numbers, got {cfg['VOXEL_SIZE']}")
        pcr = processor.point_cloud_range
        self.point_cloud_range = pcr
        self.grid_size = np.round((pcr[3:6] - pcr[0:3]) / self.voxel_size).astype(np.int64)
        self.max_points_per_voxel = int(cfg["MAX_POINTS_PER_VOXEL"])
        self.max_voxels = int(_mode_value(cfg["MAX_NUMBER_OF_VOXELS"], processor.mode, where))
        self.num_point_features = processor.num_point_features
        self._generator = None  # built on first use, per process (not pickled to workers)

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_generator"] = None
        return state

    def settings(self):
        return {
            "voxel_size": self.voxel_size.copy(),
            "grid_size": self.grid_size.copy(),
            "point_cloud_range": self.point_cloud_range.copy(),
            "max_points_per_voxel": self.max_points_per_voxel,
            "max_number_of_voxels": self.max_voxels,
        }

    def _get_generator(self):
        if self._generator is None:
            self._generator = _point_to_voxel_class()(
                vsize_xyz=self.voxel_size.tolist(),
                coors_range_xyz=self.point_cloud_range.tolist(),
                num_point_features=self.num_point_features,
                max_num_voxels=self.max_voxels,
                max_num_points_per_voxel=self.max_points_per_voxel,
            )
        return self._generator

    def __call__(self, data_dict):
        points = np.ascontiguousarray(data_dict["points"], dtype=np.float32)
        if points.shape[1] != self.num_point_features:
            raise ValueError(f"voxeliser expects {self.num_point_features} point features, got {points.shape[1]}")
        voxels, coords, num_points = self._get_generator()(torch.from_numpy(points))
        sfx = self.suffix
        data_dict["voxels" + sfx] = voxels.numpy().copy()
        data_dict["voxel_coords" + sfx] = coords.numpy().astype(np.int32)
        data_dict["voxel_num_points" + sfx] = num_points.numpy().astype(np.int32)
        return data_dict


class DataProcessor:
    """Runs the configured steps in order on a ``data_dict``."""

    def __init__(self, processor_configs, point_cloud_range, training, num_point_features):
        self.point_cloud_range = np.asarray(point_cloud_range, dtype=np.float32)
        self.training = training
        self.mode = "train" if training else "test"
        self.num_point_features = num_point_features
        self.grid_size = None
        self.voxel_size = None
        self.voxel_settings = {}
        self.keys_with_suffix = {}
        self.steps = []
        for i, cfg in enumerate(processor_configs or []):
            name = cfg.get("NAME")
            where = f"DATA_PROCESSOR[{i}] ({name})"
            step = PROCESSORS.get(name, where)(cfg, where, self)
            if isinstance(step, TransformPointsToVoxels):
                if step.suffix in self.voxel_settings:
                    raise ConfigError(f"{where}: a voxeliser with KEY_SUFFIX {step.suffix!r} is already configured")
                self.voxel_settings[step.suffix] = step.settings()
                self.keys_with_suffix.setdefault(step.suffix, []).extend(step.OUTPUT_KEYS)
                for key in step.OUTPUT_KEYS:  # suffixed outputs are collated like the unsuffixed ones
                    if step.suffix and key + step.suffix not in COLLATE_RULES:
                        register_collate_rule(key + step.suffix, COLLATE_RULES[key])
                if step.suffix == "":
                    self.grid_size = step.grid_size
                    self.voxel_size = step.voxel_size
            elif getattr(step, "DEFINES_GRID", False):  # e.g. the cylindrical partition
                if "" in self.voxel_settings:
                    raise ConfigError(f"{where}: a voxeliser is already configured")
                self.voxel_settings[""] = step.settings()
                self.keys_with_suffix.setdefault("", []).extend(step.OUTPUT_KEYS)
                self.grid_size = step.grid_size
                self.voxel_size = step.voxel_size
            self.steps.append((name, step))

    @property
    def step_names(self):
        return [name for name, _ in self.steps]

    def forward(self, data_dict):
        for _, step in self.steps:
            data_dict = step(data_dict)
        return data_dict

    __call__ = forward
