"""Training-time augmentation pipeline built from a ``DATA_AUGMENTOR`` config section.

Owns :class:`DataAugmentor` and the steps, registered in :data:`pcdet.datasets.registries.AUGMENTATIONS`
by step name. The section has ``AUG_CONFIG_LIST`` (a list of steps, each a mapping with ``NAME``
plus the step's own keys) and ``DISABLE_AUG_LIST`` (step names to skip). Steps run in list order
on a ``data_dict`` holding ``points`` (N, 3+C) and, for a dataset with boxes, ``gt_boxes`` (M, 7+)
and ``gt_names`` (M,); per-point labels and other point-aligned keys
(:mod:`pcdet.datasets.data_contract`) stay aligned with the points:

* ``gt_sampling``: :class:`~pcdet.datasets.augmentor.database_sampler.DataBaseSampler` (needs
  boxes; refuses a sample with per-point labels, which pasted objects would not have).
* ``random_world_flip``: ``ALONG_AXIS_LIST`` of ``x``/``y``; each axis flips with p = 0.5 and is
  recorded as ``flip_x`` / ``flip_y``.
* ``random_world_rotation``: ``WORLD_ROT_ANGLE`` = [low, high] (rad), recorded as ``noise_rot``.
* ``random_world_scaling``: ``WORLD_SCALE_RANGE`` = [low, high], recorded as ``noise_scale``; ``SCALE_AXES``
  [x, y, z] (default) or [x, y] (Cylinder3D's scale_aug: heights unscaled).
* ``random_world_translation``: ``NOISE_TRANSLATE_STD`` (a scalar or one per axis, metres): an offset
  drawn per axis from N(0, std), recorded as ``noise_translate`` (3,).

Unknown step names or unknown keys in a step raise :class:`pcdet.config.ConfigKeyError`.
After the steps, headings are wrapped to [-pi, pi). World flips, rotations and scalings work
without boxes (a segmentation sample has none).
"""
import numpy as np

from pcdet.config import ConfigError, check_keys
from pcdet.datasets.augmentor import augmentor_utils
from pcdet.datasets.augmentor.database_sampler import DataBaseSampler
from pcdet.datasets.registries import AUGMENTATIONS
from pcdet.utils.common_utils import limit_period

_NO_BOXES = np.zeros((0, 7), dtype=np.float32)


def _boxes(data_dict):
    return data_dict.get("gt_boxes", _NO_BOXES)


def _set(data_dict, boxes, points):
    if "gt_boxes" in data_dict:
        data_dict["gt_boxes"] = boxes
    data_dict["points"] = points
    return data_dict


class _Step:
    """One configured augmentation: ``step(data_dict, rng) -> data_dict``."""

    allowed = {"NAME"}

    def __init__(self, cfg, where):
        check_keys(cfg, self.allowed, where)
        self.cfg = cfg


@AUGMENTATIONS.register("random_world_flip")
class RandomWorldFlip(_Step):
    allowed = {"NAME", "ALONG_AXIS_LIST"}

    def __init__(self, cfg, where, **_):
        super().__init__(cfg, where)
        self.axes = list(cfg.get("ALONG_AXIS_LIST", ["x"]))
        for axis in self.axes:
            if axis not in ("x", "y"):
                raise ValueError(f"{where}: ALONG_AXIS_LIST entries must be 'x' or 'y', got {axis!r}")

    def __call__(self, data_dict, rng=None):
        boxes, points = _boxes(data_dict), data_dict["points"]
        for axis in self.axes:
            boxes, points, enabled = augmentor_utils.random_flip(boxes, points, axis, rng)
            data_dict[f"flip_{axis}"] = enabled
        return _set(data_dict, boxes, points)


@AUGMENTATIONS.register("random_world_rotation")
class RandomWorldRotation(_Step):
    allowed = {"NAME", "WORLD_ROT_ANGLE"}

    def __init__(self, cfg, where, **_):
        super().__init__(cfg, where)
        rot = cfg["WORLD_ROT_ANGLE"]
        self.rot_range = [-abs(float(rot)), abs(float(rot))] if np.isscalar(rot) else [float(r) for r in rot]

    def __call__(self, data_dict, rng=None):
        boxes, points, angle = augmentor_utils.global_rotation(_boxes(data_dict), data_dict["points"],
                                                               self.rot_range, rng)
        data_dict["noise_rot"] = angle
        return _set(data_dict, boxes, points)


@AUGMENTATIONS.register("random_world_scaling")
class RandomWorldScaling(_Step):
    allowed = {"NAME", "WORLD_SCALE_RANGE", "SCALE_AXES"}
    AXES = {("x", "y", "z"): (0, 1, 2), ("x", "y"): (0, 1)}

    def __init__(self, cfg, where, **_):
        super().__init__(cfg, where)
        self.scale_range = [float(s) for s in cfg["WORLD_SCALE_RANGE"]]
        axes = tuple(str(a) for a in cfg.get("SCALE_AXES", ["x", "y", "z"]))
        if axes not in self.AXES:
            raise ConfigError(f"{where}.SCALE_AXES: {list(axes)}; use [x, y, z] (default) or [x, y]")
        self.axes = self.AXES[axes]

    def __call__(self, data_dict, rng=None):
        boxes, points, scale = augmentor_utils.global_scaling(_boxes(data_dict), data_dict["points"],
                                                              self.scale_range, rng, self.axes)
        data_dict["noise_scale"] = scale
        return _set(data_dict, boxes, points)


@AUGMENTATIONS.register("random_world_translation")
class RandomWorldTranslation(_Step):
    allowed = {"NAME", "NOISE_TRANSLATE_STD"}

    def __init__(self, cfg, where, **_):
        super().__init__(cfg, where)
        std = np.asarray(cfg["NOISE_TRANSLATE_STD"], dtype=np.float64).reshape(-1)
        if std.size not in (1, 3) or (std < 0).any():
            raise ValueError(f"{where}: NOISE_TRANSLATE_STD must be one or three non-negative numbers, "
                             f"got {cfg['NOISE_TRANSLATE_STD']}")
        self.std = np.broadcast_to(std, (3,)).copy()

    def __call__(self, data_dict, rng=None):
        boxes, points, offset = augmentor_utils.global_translation(_boxes(data_dict), data_dict["points"],
                                                                   self.std, rng)
        data_dict["noise_translate"] = offset.astype(np.float32)
        return _set(data_dict, boxes, points)


@AUGMENTATIONS.register("gt_sampling")
class GtSampling:
    def __init__(self, cfg, where, root_path=None, class_names=None, logger=None):
        self.sampler = DataBaseSampler(root_path, cfg, class_names, logger=logger)

    def __call__(self, data_dict, rng=None):
        return self.sampler(data_dict, rng)


class DataAugmentor:
    """Runs the configured augmentation steps in order (training only)."""

    def __init__(self, root_path, augmentor_configs, class_names, logger=None):
        check_keys(augmentor_configs, {"AUG_CONFIG_LIST", "DISABLE_AUG_LIST"}, "DATA_AUGMENTOR")
        self.root_path = root_path
        self.class_names = class_names
        self.logger = logger
        disabled = set(augmentor_configs.get("DISABLE_AUG_LIST", []) or [])
        self.steps = []
        for i, cfg in enumerate(augmentor_configs.get("AUG_CONFIG_LIST", []) or []):
            name = cfg.get("NAME")
            where = f"DATA_AUGMENTOR.AUG_CONFIG_LIST[{i}] ({name})"
            cls = AUGMENTATIONS.get(name, where)
            if name in disabled:
                continue
            step = cls(cfg, where, root_path=root_path, class_names=class_names, logger=logger)
            self.steps.append((name, step))

    @property
    def step_names(self):
        return [name for name, _ in self.steps]

    def forward(self, data_dict, rng=None):
        """Apply every enabled step; ``gt_boxes``/``gt_names`` are filtered by ``gt_boxes_mask`` at the end."""
        for _, step in self.steps:
            data_dict = step(data_dict, rng)
        if len(data_dict.get("gt_boxes", ())):
            data_dict["gt_boxes"][:, 6] = limit_period(data_dict["gt_boxes"][:, 6], offset=0.5, period=2 * np.pi)
        if "gt_boxes_mask" in data_dict:
            mask = data_dict.pop("gt_boxes_mask")
            data_dict["gt_boxes"] = data_dict["gt_boxes"][mask]
            data_dict["gt_names"] = data_dict["gt_names"][mask]
        return data_dict

    __call__ = forward
