"""SemanticKITTI (LiDAR semantic segmentation) in its real layout.

Owns :class:`SemanticKittiDataset` and :data:`OFFICIAL_SEQUENCES`. Layout under the dataset root
(the real SemanticKITTI and the embedded synthetic set alike)::

    sequences/NN/velodyne/FFFFFF.bin     float32 x, y, z, remission per point
    sequences/NN/labels/FFFFFF.label     uint32 per point: raw semantic id (lower 16 bits), instance (upper 16)
    sequences/NN/predictions/...         written by the evaluator on a split without labels

Splits (``SEQUENCES`` in the dataset config; the official ones by default): train 00-07, 09, 10;
val 08; test 11-21 (no labels); trainval = train + val. A split lists the sequences whose folders
exist under the root; a listed sequence that is missing is an error naming the folder unless the
config sets ``SKIP_MISSING_SEQUENCES: True`` (the embedded set only has the sequences it wrote).

Per sample (:meth:`SemanticKittiDataset.__getitem__`): ``frame_id`` ``"NN/FFFFFF"``, ``points``
(N, 4), ``point_labels`` (N,) int64 learning classes 0..19 (0 = unlabeled, ignored by losses and the
metric; only on splits with labels), ``point_inst_labels`` (N,) instance ids, and
``num_points_raw`` (the scan's point count, so a prediction file can be checked against it).
Every per-point key stays aligned with ``points`` through augmentation and processing
(:mod:`pcdet.datasets.data_contract`). ``FOV_ANGLE`` (degrees, optional) keeps only the points
with ``|atan2(y, x)| <= FOV_ANGLE / 2`` (360: the whole sweep; a front crop for the CPU-scale configs; a run that uses it
evaluates those points only and says so in ``dataset_note``). ``MAX_FRAMES`` (optional) keeps the
first frames of a split (smoke runs).

Bad input raises an error naming the file: a missing root or sequence folder, a ``.bin`` whose size
is not a multiple of 16 bytes, a ``.label`` whose length differs from its ``.bin``, an unknown raw
id, a missing ``.label`` on a labelled split (:class:`~pcdet.datasets.dataset.DatasetFileError`
or :class:`~pcdet.datasets.semantickitti.label_map.LabelFileError`).
"""
from pathlib import Path

import numpy as np

from pcdet.config import check_keys
from pcdet.datasets.dataset import DatasetFileError, DatasetTemplate, load_points_bin
from pcdet.datasets.semantickitti import label_map

#: the official SemanticKITTI splits (semantic-kitti-api config/semantic-kitti.yaml ``split``)
OFFICIAL_SEQUENCES = {
    "train": ["00", "01", "02", "03", "04", "05", "06", "07", "09", "10"],
    "val": ["08"],
    "test": [f"{s:02d}" for s in range(11, 22)],
}
OFFICIAL_SEQUENCES["trainval"] = OFFICIAL_SEQUENCES["train"] + OFFICIAL_SEQUENCES["val"]
LABELLED_SPLITS = ("train", "val", "trainval")

CONFIG_KEYS = {
    "DATASET", "DATA_PATH", "POINT_CLOUD_RANGE", "DATA_SPLIT", "SEQUENCES", "SKIP_MISSING_SEQUENCES", "FOV_ANGLE",
    "MAX_FRAMES", "POINT_FEATURE_ENCODING", "DATA_AUGMENTOR", "DATA_PROCESSOR", "_BASE_CONFIG_",
}
NUM_POINT_FEATURES = 4


def sequence_name(seq):
    """``8`` / ``"8"`` / ``"08"`` -> ``"08"``."""
    return f"{int(seq):02d}"


class SemanticKittiDataset(DatasetTemplate):
    EVALUATOR = "miou"
    FORMAT_NAME = "SemanticKITTI"
    SPLITS = ("train", "val", "test", "trainval")
    #: the learning class losses and the metric ignore; the models' logits have len(CLASS_NAMES) + 1 columns
    IGNORE_LABEL = label_map.IGNORE_CLASS
    SETUP_HINT = ("Download SemanticKITTI (the KITTI odometry velodyne scans and the SemanticKITTI labels) so that "
                  "the folder holds sequences/NN/velodyne and sequences/NN/labels")

    SYNTHETIC_FORMAT = "semantickitti"

    @classmethod
    def dataset_note_for(cls, root, dataset_cfg=None):
        note = super().dataset_note_for(root)
        fov = _fov(dataset_cfg or {})
        return note + (f"; front {fov:g} deg crop (only those points are evaluated)" if fov is not None else "")

    @classmethod
    def required_files(cls, root):
        return [Path(root) / "sequences"]

    @classmethod
    def first_val_frame(cls, root, dataset_cfg=None):
        """The first scan of the first val sequence that exists under ``root``."""
        seqs = ((dataset_cfg or {}).get("SEQUENCES", None) or {}).get("val", OFFICIAL_SEQUENCES["val"])
        for seq in seqs:
            scans = sorted((Path(root) / "sequences" / sequence_name(seq) / "velodyne").glob("*.bin"))
            if scans:
                return scans[0]
        raise DatasetFileError(f"no val scan under {Path(root) / 'sequences'} (sequences {list(seqs)})")

    def __init__(self, dataset_cfg, class_names, training=True, root_path=None, logger=None):
        check_keys(dataset_cfg, CONFIG_KEYS, "DATA_CONFIG (SemanticKittiDataset)")
        if list(class_names) != label_map.CLASS_NAMES:
            raise ValueError(f"CLASS_NAMES of a SemanticKITTI config must be the 19 learning classes in order "
                             f"{label_map.CLASS_NAMES}, got {list(class_names)}")
        super().__init__(dataset_cfg=dataset_cfg, class_names=class_names, training=training, root_path=root_path,
                         logger=logger)
        self.split = dataset_cfg.DATA_SPLIT[self.mode]
        seqs = dict(OFFICIAL_SEQUENCES)
        for name, lst in (dataset_cfg.get("SEQUENCES", None) or {}).items():
            if name not in self.SPLITS:
                raise ValueError(f"DATA_CONFIG.SEQUENCES: unknown split {name!r} (splits: {', '.join(self.SPLITS)})")
            seqs[name] = [sequence_name(s) for s in lst]
        self.sequences = [sequence_name(s) for s in seqs[self.split]]
        self.has_labels = self.split in LABELLED_SPLITS
        fov = dataset_cfg.get("FOV_ANGLE", None)
        if fov is not None and not 0.0 < float(fov) <= 360.0:
            raise ValueError(f"DATA_CONFIG.FOV_ANGLE must be in (0, 360] degrees, got {fov}")
        self.fov_angle = _fov(dataset_cfg)
        self.dataset_note = self.dataset_note_for(self.root_path, dataset_cfg)
        self.frames = self._list_frames(bool(dataset_cfg.get("SKIP_MISSING_SEQUENCES", False)))
        max_frames = dataset_cfg.get("MAX_FRAMES", None)
        if max_frames is not None:
            self.frames = self.frames[: int(max_frames)]
        if logger is not None:
            logger.info(f"SemanticKITTI {self.mode} ({self.split}, sequences {', '.join(self.sequences)}): "
                        f"{len(self.frames)} scans")

    # ------------------------------------------------------------------ files
    def _list_frames(self, skip_missing):
        root = self.root_path / "sequences"
        if not root.is_dir():
            raise DatasetFileError(f"SemanticKITTI sequences folder not found: {root} ({self.SETUP_HINT})")
        frames = []
        for seq in self.sequences:
            velo = root / seq / "velodyne"
            if not velo.is_dir():
                if skip_missing:
                    continue
                raise DatasetFileError(f"SemanticKITTI sequence {seq} of split {self.split!r} not found: {velo} "
                                       f"(set DATA_CONFIG.SEQUENCES or SKIP_MISSING_SEQUENCES)")
            frames += [(seq, p.stem) for p in sorted(velo.glob("*.bin"))]
        if not frames:
            raise DatasetFileError(f"no scans (*.bin) for split {self.split!r} under {root} "
                                   f"(sequences {', '.join(self.sequences)})")
        return frames

    def scan_path(self, seq, scan):
        return self.root_path / "sequences" / seq / "velodyne" / f"{scan}.bin"

    def label_path(self, seq, scan):
        return self.root_path / "sequences" / seq / "labels" / f"{scan}.label"

    def get_lidar(self, seq, scan):
        return load_points_bin(self.scan_path(seq, scan), NUM_POINT_FEATURES)

    def get_labels(self, seq, scan, num_points):
        """``(learning classes (N,) int64, instance ids (N,) int64)`` of a scan (its length is checked)."""
        path = self.label_path(seq, scan)
        sem, inst = label_map.read_label_file(path, num_points=num_points)
        return label_map.to_learning(sem, str(path)), inst.astype(np.int64)

    # ------------------------------------------------------------------ samples
    def __len__(self):
        return len(self.frames)

    def __getitem__(self, index):
        seq, scan = self.frames[index]
        points = self.get_lidar(seq, scan)
        input_dict = {"frame_id": f"{seq}/{scan}", "points": points, "num_points_raw": np.int64(len(points))}
        if self.has_labels:
            input_dict["point_labels"], input_dict["point_inst_labels"] = self.get_labels(seq, scan, len(points))
        if self.fov_angle is not None:
            input_dict = _take(input_dict, fov_mask(points, self.fov_angle))
        return self.prepare_data(input_dict)

    @classmethod
    def crop_points(cls, points, dataset_cfg, path=None):
        fov = _fov(dataset_cfg)
        return points if fov is None else points[fov_mask(points, fov)]

    def prediction_layout_ok(self):
        """Can predictions of this split be written as submission files (one per raw point, in order)?
        Not when points are cropped, masked or shuffled in test mode."""
        names = set(self.data_processor.step_names)
        shuffle = next((s for n, s in self.data_processor.steps if n == "shuffle_points"), None)
        return self.fov_angle is None and "mask_points_and_boxes_outside_range" not in names \
            and (shuffle is None or not shuffle.enabled)


def fov_mask(points, fov_angle):
    """(N,) bool: the points with ``|atan2(y, x)| <= fov_angle / 2`` (degrees)."""
    return np.abs(np.degrees(np.arctan2(points[:, 1], points[:, 0]))) <= fov_angle / 2


def _fov(dataset_cfg):
    """``FOV_ANGLE`` in degrees, None for no crop (absent or 360)."""
    fov = dataset_cfg.get("FOV_ANGLE", None)
    return None if fov is None or float(fov) >= 360.0 else float(fov)


def _take(input_dict, keep):
    from pcdet.datasets.data_contract import take_points

    return take_points(input_dict, keep)
