"""Dataset base class: info -> augmentation (training only) -> feature encoding -> processing -> batch.

Owns :class:`DatasetTemplate` (subclassed per dataset, e.g. ``KittiDataset``), its
:meth:`~DatasetTemplate.collate_batch` and :class:`DatasetFileError`.

What a dataset class declares (the harness and the evaluation loop read these, never a dataset's
own module): ``EVALUATOR`` (its name in :data:`pcdet.datasets.registries.EVALUATORS`),
``FORMAT_NAME`` (what the data is called in every output), :meth:`~DatasetTemplate.required_files`
(what must exist under a root before a run), :meth:`~DatasetTemplate.dataset_note_for` (the label every
output carries: the embedded synthetic data says so) and the split names of ``DATA_SPLIT``. Labels
are optional: a detection sample carries ``gt_boxes`` / ``gt_names``, a segmentation sample
per-point ``point_labels`` and no boxes.

Paths: ``DATA_PATH`` in a dataset config is absolute or relative to the repository root
(:data:`pcdet.utils.paths.REPO_ROOT`), never to the current directory; the ``root_path``
argument, when given, overrides it.

Per-sample ``data_dict`` (output of :meth:`DatasetTemplate.prepare_data`)
--------------------------------------------------------------------------
``frame_id`` str; ``points`` (N, C) float32 (C = ``num_point_features``, x, y, z first);
``gt_boxes`` (M, 8) float32 ``[x, y, z, dx, dy, dz, heading, class]`` in the LiDAR frame, class
1-based in ``class_names`` (only when the frame has labels); ``voxels`` (V, P, C),
``voxel_coords`` (V, 3) int32 (z, y, x), ``voxel_num_points`` (V,) when the config voxelises;
plus whatever the subclass adds (KITTI: ``calib``, ``image_shape``) and the augmentation record in
training (``flip_x``, ``noise_rot``, ``noise_scale``, ``num_sampled_gt``).

``batch_dict`` (output of :meth:`DatasetTemplate.collate_batch`; numpy, models convert to torch)
---------------------------------------------------------------------------------------------
=====================  =================  ===================================================
key                    shape / type       meaning
=====================  =================  ===================================================
batch_size             int                B
frame_id               (B,) str array     frame ids
points                 (sum N, 1 + C)     column 0 = batch index, then the point features
voxels                 (sum V, P, C)      concatenated over the batch
voxel_num_points       (sum V,) int32     valid points per voxel
voxel_coords           (sum V, 1 + 3)     [batch index, z, y, x] int32
gt_boxes               (B, max(1, max M), 8) float32, zero rows pad (class 0 = padding)
calib                  list of B          per-frame calibration objects
image_shape            (B, 2) int         (H, W) of image 2 (KITTI)
use_lead_xyz           (B,) bool
flip_x, noise_rot, ... (B,)               augmentation record (training)
=====================  =================  ===================================================

Every key is collated by an explicit rule (:mod:`pcdet.datasets.data_contract`); keys written by a
suffixed voxeliser (``voxels_tea``, ``voxel_coords_tea``, ...) follow their base key's rule. Per-point
keys (``point_labels``, ...) stay aligned with ``points`` through every step. An empty cloud (or one
with no point in ``POINT_CLOUD_RANGE``) is valid: it gives zero points and zero voxels, and a warning
naming the frame.
"""
import warnings
from pathlib import Path

import numpy as np
import torch.utils.data as torch_data

from pcdet.datasets import data_contract
from pcdet.datasets.augmentor.data_augmentor import DataAugmentor
from pcdet.datasets.processor.data_processor import DataProcessor
from pcdet.datasets.processor.point_feature_encoder import PointFeatureEncoder
from pcdet.utils.paths import REPO_ROOT


class DatasetFileError(ValueError):
    """A data file (point cloud, info pickle, ...) is missing or malformed; the message names it."""


def resolve_data_path(data_path):
    """``DATA_PATH`` -> absolute Path (relative paths are taken from the repository root)."""
    path = Path(data_path).expanduser()
    return path if path.is_absolute() else (REPO_ROOT / path)


def load_points_bin(path, num_features=4):
    """Read a float32 point file (e.g. KITTI velodyne ``.bin``) as (N, ``num_features``).

    Raises :class:`DatasetFileError` naming the file when it is missing or its size is not a
    multiple of ``4 * num_features`` bytes. An empty file gives a (0, num_features) array.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetFileError(f"point cloud file not found: {path}")
    size = path.stat().st_size
    row = 4 * num_features
    if size % row != 0:
        raise DatasetFileError(
            f"{path}: size {size} bytes is not a multiple of {row} (float32 x {num_features} features per point)"
        )
    return np.fromfile(path, dtype=np.float32).reshape(-1, num_features)


def _as_boxes(boxes):
    arr = np.asarray(boxes, dtype=np.float32)
    if arr.size == 0:
        return np.zeros((0, arr.shape[-1] if arr.ndim == 2 else 7), dtype=np.float32)
    return arr.reshape(-1, arr.shape[-1])


#: file the embedded synthetic generator writes beside the dataset folders (its writers' manifest)
SYNTHETIC_MANIFEST = "synthetic_dataset.json"


class DatasetTemplate(torch_data.Dataset):
    #: name of the dataset's evaluator in EVALUATORS (None: the dataset cannot be evaluated)
    EVALUATOR = None
    #: what the data is called in outputs ("KITTI", "SemanticKITTI", ...)
    FORMAT_NAME = "point clouds"
    #: the split names the dataset has (``DATA_SPLIT`` maps the modes train / test to them); None: any
    SPLITS = None
    #: segmentation: the label that losses and the metric ignore (None: every label is a class)
    IGNORE_LABEL = None

    def __init__(self, dataset_cfg=None, class_names=None, training=True, root_path=None, logger=None):
        super().__init__()
        self.dataset_cfg = dataset_cfg
        self.training = training
        self.class_names = list(class_names)
        self.logger = logger
        if root_path is not None:
            self.root_path = resolve_data_path(root_path)
        else:
            self.root_path = resolve_data_path(dataset_cfg.DATA_PATH)
        self.point_cloud_range = np.array(dataset_cfg.POINT_CLOUD_RANGE, dtype=np.float32)
        if self.point_cloud_range.shape != (6,) or (self.point_cloud_range[3:6] <= self.point_cloud_range[0:3]).any():
            raise ValueError(f"POINT_CLOUD_RANGE must be [xmin, ymin, zmin, xmax, ymax, zmax], "
                             f"got {dataset_cfg.POINT_CLOUD_RANGE}")
        self.point_feature_encoder = PointFeatureEncoder(dataset_cfg.POINT_FEATURE_ENCODING, self.point_cloud_range)
        aug_cfg = dataset_cfg.get("DATA_AUGMENTOR")
        self.data_augmentor = (
            DataAugmentor(self.root_path, aug_cfg, self.class_names, logger=logger)
            if self.training and aug_cfg is not None
            else None
        )
        self.data_processor = DataProcessor(
            dataset_cfg.get("DATA_PROCESSOR", []),
            point_cloud_range=self.point_cloud_range,
            training=self.training,
            num_point_features=self.point_feature_encoder.num_point_features,
        )
        self.grid_size = self.data_processor.grid_size
        self.voxel_size = self.data_processor.voxel_size
        self.dataset_note = self.dataset_note_for(self.root_path)
        self.is_synthetic = (self.root_path / SYNTHETIC_MANIFEST).is_file()
        split = (dataset_cfg.get("DATA_SPLIT", None) or {}).get(self.mode, None)
        if self.SPLITS is not None and split is not None and split not in self.SPLITS:
            raise ValueError(f"DATA_CONFIG.DATA_SPLIT.{self.mode}: {split!r} is not a split of {type(self).__name__} "
                             f"({', '.join(self.SPLITS)})")

    # ------------------------------------------------------------------ what a dataset class declares
    #: ``--format`` of the embedded synthetic generator that writes this dataset's layout (None: none)
    SYNTHETIC_FORMAT = None

    @classmethod
    def prepare_generated(cls, cfg, root):
        """What the dataset needs after the embedded generator wrote ``root`` (e.g. KITTI's info
        pickles); ``cfg`` is the experiment config. Returns a summary dict (default: nothing to do)."""
        return {}

    @classmethod
    def crop_points(cls, points, dataset_cfg, path=None):
        """The part of a raw cloud the dataset's samples keep before augmentation (default: all of it;
        SemanticKITTI: its optional ``FOV_ANGLE`` front crop; KITTI: the camera field of view when the
        frame's calibration lies beside it). ``path``: the point file, when known.
        :class:`PointCloudFileDataset` applies it too, so complexity and latency are measured on what
        the model sees in evaluation."""
        return points

    @classmethod
    def first_val_frame(cls, root, dataset_cfg=None):
        """The point file of the first frame of the val split under ``root`` (what the benchmarks time)."""
        raise NotImplementedError(f"{cls.__name__} does not name its first val frame")

    @classmethod
    def required_files(cls, root):
        """Paths that must exist under ``root`` before training or evaluating (default: the root)."""
        return [Path(root)]

    @classmethod
    def dataset_note_for(cls, root, dataset_cfg=None):
        """The label every output carries about the data at ``root``: the embedded synthetic dataset
        (its generator's manifest is there) or the real ``FORMAT_NAME`` data (``dataset_cfg``: what a
        subclass adds from its config, e.g. a crop)."""
        if (Path(root) / SYNTHETIC_MANIFEST).is_file():
            return f"EMBEDDED SYNTHETIC dataset in the {cls.FORMAT_NAME} format (not real {cls.FORMAT_NAME})"
        return cls.FORMAT_NAME

    def build_evaluator(self, output_dir=None):
        """A fresh evaluator of this dataset (``EVALUATOR`` in the registry), writing into ``output_dir``."""
        from pcdet.datasets.registries import EVALUATORS

        if self.EVALUATOR is None:
            raise NotImplementedError(f"{type(self).__name__} declares no EVALUATOR")
        return EVALUATORS.get(self.EVALUATOR, f"{type(self).__name__}.EVALUATOR")(self, output_dir)

    @property
    def mode(self):
        return "train" if self.training else "test"

    def __getstate__(self):
        state = dict(self.__dict__)
        if "logger" in state:
            del state["logger"]
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self.logger = None

    def __len__(self):  # abstract: each dataset knows its frames
        raise NotImplementedError(f"{type(self).__name__} must define __len__")

    def __getitem__(self, index):  # abstract: load a frame, then call self.prepare_data
        raise NotImplementedError(f"{type(self).__name__} must define __getitem__")

    def _warn(self, message):
        if self.logger is not None:
            self.logger.warning(message)
        else:
            warnings.warn(message, stacklevel=3)

    def prepare_data(self, data_dict):
        """Augment (training), keep ``class_names`` boxes, encode features, run the processor.

        ``data_dict`` needs ``points`` and ``frame_id``; with labels also ``gt_boxes`` (M, 7) in
        the LiDAR frame and ``gt_names`` (M,). Returns the per-sample dict described above.
        """
        frame_id = data_dict.get("frame_id", "?")
        n_raw = len(data_dict["points"])
        if self.training and self.data_augmentor is not None:
            if "gt_boxes" not in data_dict and not any(k in data_dict for k in data_contract.POINT_KEYS - {"points"}):
                raise ValueError(f"frame {frame_id}: training needs labels (gt_boxes or per-point labels)")
            if "gt_boxes" in data_dict:
                gt_names = np.asarray(data_dict["gt_names"]).astype(str)
                data_dict["gt_names"] = gt_names
                data_dict["gt_boxes"] = _as_boxes(data_dict["gt_boxes"])
                data_dict["gt_boxes_mask"] = np.array([n in self.class_names for n in gt_names], dtype=bool)
            data_dict = self.data_augmentor.forward(data_dict)

        if data_dict.get("gt_boxes") is not None:
            gt_names = np.asarray(data_dict["gt_names"]).astype(str)
            selected = np.array([n in self.class_names for n in gt_names], dtype=bool)
            boxes = _as_boxes(data_dict["gt_boxes"])[selected]
            classes = np.array([self.class_names.index(n) + 1 for n in gt_names[selected]], dtype=np.float32)
            data_dict["gt_boxes"] = np.concatenate([boxes, classes.reshape(-1, 1)], axis=1)
            data_dict["gt_names"] = gt_names[selected]

        data_dict = self.point_feature_encoder.forward(data_dict)
        data_dict = self.data_processor.forward(data_dict)

        if len(data_dict["points"]) == 0:
            where = "the point cloud is empty" if n_raw == 0 else f"none of its {n_raw} points is inside POINT_CLOUD_RANGE"
            self._warn(f"frame {frame_id}: {where}; it yields zero points and zero voxels")
        data_dict.pop("gt_names", None)
        return data_dict

    @staticmethod
    def collate_batch(batch_list):
        """List of per-sample dicts -> one ``batch_dict`` (each key by its rule in
        :mod:`pcdet.datasets.data_contract`; layout in the module docstring)."""
        keys = list(dict.fromkeys(k for sample in batch_list for k in sample))
        batch_size = len(batch_list)
        out = {}
        for key in keys:
            vals = [sample[key] for sample in batch_list if key in sample]
            if len(vals) != batch_size:
                raise ValueError(f"collate_batch: key {key!r} is present in only {len(vals)} of {batch_size} samples")
            out[key] = data_contract.collate(key, vals, batch_list)
        out["batch_size"] = batch_size
        return out

