"""Ground-truth sampling ("copy-paste") augmentation from a ground-truth database.

Owns :class:`DataBaseSampler`, the ``gt_sampling`` step. The database is one or more pickles
(``DB_INFO_PATH``, relative to the dataset root) mapping a class name to a list of object infos:
``name``, ``path`` (object points file relative to the folder of its pickle, float32, ``NUM_POINT_FEATURES``
columns, xyz relative to the box centre), ``box3d_lidar`` (7,), ``num_points_in_gt``,
``difficulty``, ``image_idx``, ``gt_idx``, ``bbox``, ``score``.

Per scene and per ``SAMPLE_GROUPS`` entry ``"Class:N"`` it draws up to N objects (N minus the
objects of that class already in the scene with ``LIMIT_WHOLE_SCENE``), cycling through a shuffled
list per class. A drawn box is kept only when its rotated BEV IoU with every scene box and every
other drawn box is zero. Scene points inside the kept boxes (enlarged by ``REMOVE_EXTRA_WIDTH``)
are removed, then the objects' points are added.
"""
import pickle
from pathlib import Path

import numpy as np

from pcdet.config import ConfigError, check_keys
from pcdet.utils import box_utils

ALLOWED_KEYS = {
    "NAME",
    "DB_INFO_PATH",
    "PREPARE",
    "SAMPLE_GROUPS",
    "NUM_POINT_FEATURES",
    "DATABASE_WITH_FAKELIDAR",
    "REMOVE_EXTRA_WIDTH",
    "LIMIT_WHOLE_SCENE",
    "USE_ROAD_PLANE",
}
PREPARE_KEYS = {"filter_by_min_points", "filter_by_difficulty"}


class DatabaseError(ValueError):
    """A ground-truth database file is missing or malformed; the message names the file."""


def _parse_class_counts(entries, where):
    out = {}
    for entry in entries:
        name, sep, num = str(entry).partition(":")
        if not sep:
            raise ConfigError(f"{where}: expected 'Class:N', got {entry!r}")
        try:
            out[name.strip()] = int(num)
        except ValueError:
            raise ConfigError(f"{where}: expected an integer count in {entry!r}") from None
    return out


def _bev_iou(boxes_a, boxes_b):
    # Imported here so that building a dataset without gt_sampling does not need the op.
    from pcdet.ops.iou3d_nms import boxes_bev_iou_cpu

    if len(boxes_a) == 0 or len(boxes_b) == 0:
        return np.zeros((len(boxes_a), len(boxes_b)), dtype=np.float32)
    return np.asarray(boxes_bev_iou_cpu(boxes_a[:, 0:7].astype(np.float32), boxes_b[:, 0:7].astype(np.float32)))


class DataBaseSampler:
    def __init__(self, root_path, sampler_cfg, class_names, logger=None):
        check_keys(sampler_cfg, ALLOWED_KEYS, "DATA_AUGMENTOR.gt_sampling")
        self.root_path = Path(root_path)
        self.class_names = list(class_names)
        self.logger = logger
        if sampler_cfg.get("USE_ROAD_PLANE", False):
            raise ConfigError("DATA_AUGMENTOR.gt_sampling: USE_ROAD_PLANE is not supported (set it to False)")
        if sampler_cfg.get("DATABASE_WITH_FAKELIDAR", False):
            raise ConfigError("DATA_AUGMENTOR.gt_sampling: DATABASE_WITH_FAKELIDAR is not supported (set it to False)")
        self.num_point_features = int(sampler_cfg.get("NUM_POINT_FEATURES", 4))
        self.remove_extra_width = np.asarray(sampler_cfg.get("REMOVE_EXTRA_WIDTH", [0.0, 0.0, 0.0]), dtype=np.float64)
        self.limit_whole_scene = bool(sampler_cfg.get("LIMIT_WHOLE_SCENE", False))

        self.db_infos = {name: [] for name in self.class_names}
        for rel in sampler_cfg.DB_INFO_PATH:
            path = self.root_path / rel
            if not path.is_file():
                raise DatabaseError(f"ground-truth database info file not found: {path} (build it with create_kitti_infos)")
            try:
                with open(path, "rb") as f:
                    infos = pickle.load(f)
            except (pickle.UnpicklingError, EOFError) as err:
                raise DatabaseError(f"{path}: not a readable database pickle ({err})") from None
            if not isinstance(infos, dict):
                raise DatabaseError(f"{path}: expected a dict class -> list of infos, got {type(infos).__name__}")
            for name in self.class_names:  # object files are relative to the pickle's folder
                self.db_infos[name].extend(dict(info, path=str(path.parent / info["path"]))
                                           for info in infos.get(name, []))

        prepare = sampler_cfg.get("PREPARE", {}) or {}
        check_keys(prepare, PREPARE_KEYS, "DATA_AUGMENTOR.gt_sampling.PREPARE")
        if "filter_by_difficulty" in prepare:
            self.db_infos = self.filter_by_difficulty(self.db_infos, prepare["filter_by_difficulty"])
        if "filter_by_min_points" in prepare:
            min_pts = _parse_class_counts(prepare["filter_by_min_points"], "gt_sampling.PREPARE.filter_by_min_points")
            self.db_infos = self.filter_by_min_points(self.db_infos, min_pts)

        self.sample_groups = []
        for name, num in _parse_class_counts(sampler_cfg.SAMPLE_GROUPS, "gt_sampling.SAMPLE_GROUPS").items():
            if name not in self.class_names:
                continue
            self.sample_groups.append(
                {"name": name, "sample_num": num}
            )

    def __getstate__(self):
        state = dict(self.__dict__)
        state["logger"] = None
        return state

    def _log(self, msg):
        if self.logger is not None:
            self.logger.info(msg)

    def filter_by_difficulty(self, db_infos, removed_difficulty):
        removed = set(int(d) for d in removed_difficulty)
        out = {}
        for name, infos in db_infos.items():
            out[name] = [info for info in infos if int(info["difficulty"]) not in removed]
            self._log(f"gt database: {name} {len(infos)} -> {len(out[name])} after difficulty filter")
        return out

    def filter_by_min_points(self, db_infos, min_points):
        out = dict(db_infos)
        for name, min_num in min_points.items():
            if name in out and min_num > 0:
                before = len(out[name])
                out[name] = [info for info in out[name] if info["num_points_in_gt"] >= min_num]
                self._log(f"gt database: {name} {before} -> {len(out[name])} with >= {min_num} points")
        return out

    def sample_with_fixed_number(self, class_name, sample_num, rng=None):
        """``sample_num`` distinct infos of ``class_name``, drawn from ``rng`` (default: numpy's global state).

        Stateless on purpose: the draw depends only on the RNG state, which the training loop derives
        from (seed, epoch), so a run resumed at an epoch boundary samples exactly what an
        uninterrupted run samples, with any number of DataLoader workers.
        """
        rng = np.random if rng is None else rng
        n_avail = len(self.db_infos[class_name])
        sample_num = min(sample_num, n_avail)
        if sample_num <= 0:
            return []
        indices = rng.choice(n_avail, size=sample_num, replace=False)
        return [self.db_infos[class_name][i] for i in indices]

    def _load_object_points(self, info):
        from pcdet.datasets.dataset import DatasetFileError, load_points_bin

        path = Path(info["path"])
        if not path.is_file():
            raise DatabaseError(f"ground-truth database object file not found: {path}")
        try:
            pts = load_points_bin(path, self.num_point_features).copy()
        except DatasetFileError as err:
            raise DatabaseError(str(err)) from None
        pts[:, 0:3] += np.asarray(info["box3d_lidar"][0:3], dtype=np.float32)
        return pts

    def add_sampled_boxes_to_scene(self, data_dict, sampled_boxes, sampled_infos):
        points = data_dict["points"]
        obj_points = [self._load_object_points(info) for info in sampled_infos]
        obj_points = np.concatenate(obj_points, axis=0) if obj_points else np.zeros((0, points.shape[1]), np.float32)
        if obj_points.shape[1] != points.shape[1]:
            raise DatabaseError(
                f"gt database objects have {obj_points.shape[1]} features but the scene points have {points.shape[1]}"
            )
        large = box_utils.enlarge_box3d(sampled_boxes[:, 0:7], self.remove_extra_width)
        points = box_utils.remove_points_in_boxes3d(points, large)
        data_dict["points"] = np.concatenate([obj_points.astype(points.dtype), points], axis=0)
        gt_boxes = data_dict["gt_boxes"]
        data_dict["gt_boxes"] = np.concatenate([gt_boxes, sampled_boxes[:, : gt_boxes.shape[1]].astype(gt_boxes.dtype)], 0)
        data_dict["gt_names"] = np.concatenate([data_dict["gt_names"], np.array([i["name"] for i in sampled_infos])], 0)
        if "gt_boxes_mask" in data_dict:
            data_dict["gt_boxes_mask"] = np.concatenate(
                [data_dict["gt_boxes_mask"], np.ones(len(sampled_infos), dtype=bool)], 0
            )
        return data_dict

    def __call__(self, data_dict, rng=None):
        from pcdet.datasets.data_contract import point_keys_in

        labels = [k for k in point_keys_in(data_dict) if k != "points"]
        if labels:
            raise ConfigError(f"gt_sampling pastes database objects without per-point labels, but the sample carries "
                              f"the point-aligned {labels}; remove gt_sampling from DATA_AUGMENTOR for this dataset")
        if "gt_boxes" not in data_dict:
            raise ConfigError("gt_sampling needs box labels (gt_boxes) in the sample; this dataset has none")
        gt_boxes = data_dict["gt_boxes"]
        gt_names = data_dict["gt_names"].astype(str)
        existing = gt_boxes[:, 0:7].astype(np.float64)
        total_boxes, total_infos = [], []
        for group in self.sample_groups:
            name = group["name"]
            want = group["sample_num"]
            if self.limit_whole_scene:
                want = want - int((gt_names == name).sum())
            if want <= 0:
                continue
            infos = self.sample_with_fixed_number(name, want, rng)
            if not infos:
                continue
            boxes = np.stack([np.asarray(i["box3d_lidar"], dtype=np.float64)[0:7] for i in infos], axis=0)
            iou_scene = _bev_iou(boxes, existing)
            iou_self = _bev_iou(boxes, boxes)
            np.fill_diagonal(iou_self, 0.0)
            ok = np.ones(len(boxes), dtype=bool)
            if iou_scene.size:
                ok &= iou_scene.max(axis=1) == 0
            if iou_self.size:
                ok &= iou_self.max(axis=1) == 0
            keep = np.nonzero(ok)[0]
            if len(keep):
                existing = np.concatenate([existing, boxes[keep]], axis=0)
                total_boxes.append(boxes[keep])
                total_infos.extend(infos[k] for k in keep)
        if total_infos:
            data_dict = self.add_sampled_boxes_to_scene(data_dict, np.concatenate(total_boxes, 0), total_infos)
        data_dict["num_sampled_gt"] = len(total_infos)
        return data_dict
