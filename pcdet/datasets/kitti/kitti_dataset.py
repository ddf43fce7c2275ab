"""KITTI 3D object dataset: info files, ground-truth database, samples and KITTI-format results.

Owns :class:`KittiDataset` and the ``create_kitti_infos`` command::

    python -m pcdet.datasets.kitti.kitti_dataset create_kitti_infos --data_path DIR [--cfg_file CFG]

Expected layout under the dataset root (the real KITTI and the embedded synthetic set alike)::

    ImageSets/{train,val,test}.txt      frame ids, one per line
    training/velodyne/%06d.bin          float32 x, y, z, reflectance
    training/label_2/%06d.txt           KITTI labels (camera frame)
    training/calib/%06d.txt             KITTI calibration
    training/image_2/%06d.png           optional: only its size is read (field of view)
    testing/...                         optional, same without label_2

``create_kitti_infos`` writes next to the data ``kitti_infos_{train,val,trainval}.pkl`` (and
``kitti_infos_test.pkl`` when ``testing/`` exists), the ground-truth database
``gt_database/<frame>_<class>_<i>.bin`` (object points, xyz relative to the box centre, from the
full cloud) and ``kitti_dbinfos_train.pkl``.

An info is ``{'point_cloud': {'num_features', 'lidar_idx'}, 'image': {'image_idx',
'image_shape'}, 'calib': {'P2', 'R0_rect', 'Tr_velo_to_cam'} (4x4), 'annos': {...}}``; ``annos``
holds ``name, truncated, occluded, alpha, bbox, dimensions (l, h, w), location, rotation_y, score,
difficulty, index, gt_boxes_lidar, num_points_in_gt`` with the ``DontCare`` objects last
(``index`` -1, ``num_points_in_gt`` -1, no ``gt_boxes_lidar`` row). ``num_points_in_gt`` counts
the points of the camera field of view (see :func:`kitti_utils.get_fov_flag`; image size from the
PNG, else KITTI's 1242x375) inside each LiDAR box, closed faces, a point in two boxes counted
for both.

Bad input raises an error naming the file: :class:`~pcdet.datasets.dataset.DatasetFileError`
(point cloud missing or not a multiple of 16 bytes, missing split or info file),
:class:`~pcdet.utils.object3d_kitti.LabelError` (missing label, malformed line with its number),
:class:`~pcdet.utils.calibration_kitti.CalibrationError` (missing or malformed calibration).
"""
import argparse
import copy
import pickle
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from pcdet.config import cfg_from_yaml_file
from pcdet.datasets.dataset import (
    DatasetFileError,
    DatasetTemplate,
    load_points_bin,
    resolve_data_path,
)
from pcdet.datasets.kitti import kitti_utils
from pcdet.ops.points_in_boxes import points_in_boxes_cpu
from pcdet.utils import box_utils
from pcdet.utils.calibration_kitti import Calibration
from pcdet.utils.object3d_kitti import get_label_anno
from pcdet.utils.paths import REPO_ROOT

DEFAULT_CFG = REPO_ROOT / "tools" / "cfgs" / "dataset_configs" / "kitti_dataset.yaml"
DEFAULT_DB_CLASSES = ("Car", "Pedestrian", "Cyclist")
NUM_POINT_FEATURES = 4


def _to_numpy(x):
    return x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)


def _expand_4x4(mat):
    out = np.eye(4, dtype=np.float64)
    out[: mat.shape[0], : mat.shape[1]] = mat
    return out


def drop_info_with_name(info, name):
    """Copy of an annos dict without the objects called ``name`` (per-object arrays only)."""
    keep = np.array([n != name for n in info["name"]], dtype=bool)
    n_all = len(keep)
    out = {}
    for key, val in info.items():
        val = np.asarray(val)
        out[key] = val[keep] if val.ndim > 0 and len(val) == n_all else val
    return out


def load_pickle(path):
    """Unpickle ``path``; :class:`DatasetFileError` naming it when missing or unreadable."""
    path = Path(path)
    if not path.is_file():
        raise DatasetFileError(f"file not found: {path}")
    try:
        with open(path, "rb") as f:
            return pickle.load(f)
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError) as err:
        raise DatasetFileError(f"{path}: not a readable pickle ({type(err).__name__}: {err})") from None


class KittiDataset(DatasetTemplate):
    EVALUATOR = "kitti"
    FORMAT_NAME = "KITTI"
    SPLITS = ("train", "val", "test", "trainval")
    SETUP_HINT = ("Download KITTI 3D object detection (velodyne, label_2, calib, image_2 sizes, ImageSets) into that "
                  "folder, then run python -m pcdet.datasets.kitti.kitti_dataset create_kitti_infos --data_path ROOT")

    SYNTHETIC_FORMAT = "kitti"

    @classmethod
    def prepare_generated(cls, cfg, root):
        return create_kitti_infos(cfg.DATA_CONFIG, cfg.CLASS_NAMES, root, workers=2)

    @classmethod
    def first_val_frame(cls, root, dataset_cfg=None):
        split = Path(root) / "ImageSets" / "val.txt"
        if not split.is_file():
            raise DatasetFileError(f"KITTI split file not found: {split}")
        return Path(root) / "training" / "velodyne" / f"{split.read_text().split()[0]}.bin"

    @classmethod
    def required_files(cls, root):
        root = Path(root)
        return [root / "training" / "velodyne", root / "ImageSets" / "val.txt", root / "kitti_infos_train.pkl",
                root / "kitti_infos_val.pkl"]

    def __init__(self, dataset_cfg, class_names, training=True, root_path=None, logger=None, load_infos=True):
        super().__init__(
            dataset_cfg=dataset_cfg, class_names=class_names, training=training, root_path=root_path, logger=logger
        )
        self.get_item_list = list(dataset_cfg.get("GET_ITEM_LIST", ["points"]))
        unknown = [k for k in self.get_item_list if k != "points"]
        if unknown:
            raise ValueError(f"GET_ITEM_LIST: unsupported item(s) {unknown}; supported: ['points']")
        self.fov_points_only = bool(dataset_cfg.get("FOV_POINTS_ONLY", True))
        self.split = dataset_cfg.DATA_SPLIT[self.mode]
        self.root_split_path = self.root_path / ("testing" if self.split == "test" else "training")
        self.sample_id_list = None
        self.kitti_infos = []
        if load_infos:
            self.include_kitti_data(self.mode)

    # ------------------------------------------------------------------ infos
    def include_kitti_data(self, mode):
        infos = []
        for rel in self.dataset_cfg.INFO_PATH[mode]:
            path = self.root_path / rel
            if not path.is_file():
                raise DatasetFileError(
                    f"KITTI info file not found: {path} (build it with: python -m "
                    f"pcdet.datasets.kitti.kitti_dataset create_kitti_infos --data_path {self.root_path})"
                )
            loaded = load_pickle(path)
            if not isinstance(loaded, list):
                raise DatasetFileError(f"{path}: expected a list of KITTI infos, got {type(loaded).__name__}")
            infos.extend(loaded)
        self.kitti_infos.extend(infos)
        if self.logger is not None:
            self.logger.info(f"KITTI {mode}: {len(infos)} samples from {list(self.dataset_cfg.INFO_PATH[mode])}")

    def set_split(self, split):
        """Point the dataset at ``ImageSets/<split>.txt`` (used when building infos)."""
        self.split = split
        self.root_split_path = self.root_path / ("testing" if split == "test" else "training")
        split_file = self.root_path / "ImageSets" / f"{split}.txt"
        if not split_file.is_file():
            raise DatasetFileError(f"KITTI split file not found: {split_file}")
        self.sample_id_list = [ln.strip() for ln in split_file.read_text().splitlines() if ln.strip()]

    # ------------------------------------------------------------------ raw files
    def get_lidar(self, idx):
        return load_points_bin(self.root_split_path / "velodyne" / f"{idx}.bin", NUM_POINT_FEATURES)

    def get_image_shape(self, idx):
        """(H, W) of ``image_2/<idx>.png``; KITTI's default (375, 1242) when there is no PNG."""
        png = self.root_split_path / "image_2" / f"{idx}.png"
        if png.is_file():
            return np.array(kitti_utils.read_png_size(png), dtype=np.int32)
        return np.array(kitti_utils.DEFAULT_IMAGE_SHAPE, dtype=np.int32)

    def get_label(self, idx):
        return get_label_anno(self.root_split_path / "label_2" / f"{idx}.txt", allow_score=False)

    def get_calib(self, idx):
        return Calibration(self.root_split_path / "calib" / f"{idx}.txt")

    @classmethod
    def crop_points(cls, points, dataset_cfg, path=None):
        """Training's camera-FOV crop (``FOV_POINTS_ONLY``, default on) of a point file whose frame has
        ``../calib/<frame>.txt`` beside its velodyne folder (image size from ``../image_2/<frame>.png``,
        else KITTI's 1242x375); a file without calibration is kept whole."""
        if path is None or not bool(dataset_cfg.get("FOV_POINTS_ONLY", True)) or len(points) == 0:
            return points
        path = Path(path)
        calib_file = path.parent.parent / "calib" / f"{path.stem}.txt"
        if not calib_file.is_file():
            return points
        png = path.parent.parent / "image_2" / f"{path.stem}.png"
        shape = kitti_utils.read_png_size(png) if png.is_file() else kitti_utils.DEFAULT_IMAGE_SHAPE
        flag = kitti_utils.get_fov_flag_lidar(points[:, 0:3], np.asarray(shape, dtype=np.int32), Calibration(calib_file))
        return points[flag]

    def get_fov_points(self, points, calib, img_shape):
        if len(points) == 0:
            return points
        return points[kitti_utils.get_fov_flag_lidar(points[:, 0:3], img_shape, calib)]

    # ------------------------------------------------------------------ info building
    def process_single_scene(self, sample_idx, has_label=True, count_inside_pts=True):
        calib = self.get_calib(sample_idx)
        img_shape = self.get_image_shape(sample_idx)
        info = {
            "point_cloud": {"num_features": NUM_POINT_FEATURES, "lidar_idx": sample_idx},
            "image": {"image_idx": sample_idx, "image_shape": img_shape},
            "calib": {
                "P2": _expand_4x4(calib.P2),
                "R0_rect": _expand_4x4(calib.R0),
                "Tr_velo_to_cam": _expand_4x4(calib.V2C),
            },
        }
        if not has_label:
            return info
        raw = self.get_label(sample_idx)
        order = np.argsort([n == "DontCare" for n in raw["name"]], kind="stable")  # DontCare last
        annos = {k: v[order] for k, v in raw.items()}
        num_objects = int(sum(n != "DontCare" for n in annos["name"]))
        num_gt = len(annos["name"])
        annos["index"] = np.array(list(range(num_objects)) + [-1] * (num_gt - num_objects), dtype=np.int32)
        annos["difficulty"] = kitti_utils.get_difficulty(annos["bbox"], annos["truncated"], annos["occluded"])
        loc = annos["location"][:num_objects]
        dims = annos["dimensions"][:num_objects]
        rots = annos["rotation_y"][:num_objects]
        boxes_camera = np.concatenate([loc, dims, rots[:, None]], axis=1).reshape(-1, 7)
        annos["gt_boxes_lidar"] = box_utils.boxes3d_kitti_camera_to_lidar(boxes_camera, calib)
        if count_inside_pts:
            points = self.get_fov_points(self.get_lidar(sample_idx), calib, img_shape)
            inside = points_in_boxes_cpu(points[:, 0:3], annos["gt_boxes_lidar"])
            counts = inside.sum(axis=1).astype(np.int32)
            annos["num_points_in_gt"] = np.concatenate([counts, -np.ones(num_gt - num_objects, dtype=np.int32)])
        info["annos"] = annos
        return info

    def get_infos(self, num_workers=4, has_label=True, count_inside_pts=True, sample_id_list=None):
        ids = sample_id_list if sample_id_list is not None else self.sample_id_list
        if ids is None:
            raise ValueError("get_infos: no sample ids (call set_split first)")

        def work(idx):
            return self.process_single_scene(idx, has_label=has_label, count_inside_pts=count_inside_pts)

        if num_workers <= 1:
            return [work(i) for i in ids]
        with ThreadPoolExecutor(num_workers) as pool:
            return list(pool.map(work, ids))

    def create_groundtruth_database(self, info_path, used_classes=None, split="train"):
        """Write the object point files and ``kitti_dbinfos_<split>.pkl`` next to ``info_path`` (the
        dataset root unless infos are saved elsewhere); returns {class: count}."""
        save_root = Path(info_path).parent
        database_dir = save_root / ("gt_database" if split == "train" else f"gt_database_{split}")
        db_info_path = save_root / f"kitti_dbinfos_{split}.pkl"
        database_dir.mkdir(parents=True, exist_ok=True)
        infos = load_pickle(info_path)
        all_db_infos = {}
        for info in infos:
            sample_idx = info["point_cloud"]["lidar_idx"]
            points = self.get_lidar(sample_idx)
            annos = info["annos"]
            gt_boxes = annos["gt_boxes_lidar"]
            num_obj = len(gt_boxes)
            if num_obj == 0:
                continue
            inside = points_in_boxes_cpu(points[:, 0:3], gt_boxes)
            for i in range(num_obj):
                name = str(annos["name"][i])
                if used_classes is not None and name not in used_classes:
                    continue
                filename = f"{sample_idx}_{name}_{i}.bin"
                gt_points = points[inside[i] > 0].copy()
                gt_points[:, 0:3] -= gt_boxes[i, 0:3].astype(np.float32)
                gt_points.astype(np.float32).tofile(database_dir / filename)
                all_db_infos.setdefault(name, []).append(
                    {
                        "name": name,
                        "path": str(Path(database_dir.name) / filename),
                        "image_idx": sample_idx,
                        "gt_idx": i,
                        "box3d_lidar": gt_boxes[i].astype(np.float32),
                        "num_points_in_gt": int(gt_points.shape[0]),
                        "difficulty": int(annos["difficulty"][i]),
                        "bbox": annos["bbox"][i],
                        "score": float(annos["score"][i]),
                    }
                )
        with open(db_info_path, "wb") as f:
            pickle.dump(all_db_infos, f)
        if self.logger is not None:
            for name, lst in all_db_infos.items():
                self.logger.info(f"gt database {split}: {name} {len(lst)} objects")
        return {name: len(lst) for name, lst in all_db_infos.items()}

    # ------------------------------------------------------------------ samples
    def __len__(self):
        return len(self.kitti_infos)

    def __getitem__(self, index):
        info = copy.deepcopy(self.kitti_infos[index])
        sample_idx = info["point_cloud"]["lidar_idx"]
        img_shape = info["image"]["image_shape"]
        calib = self.get_calib(sample_idx)
        input_dict = {"frame_id": sample_idx, "calib": calib}
        if "annos" in info:
            annos = drop_info_with_name(info["annos"], "DontCare")
            boxes_camera = np.concatenate(
                [annos["location"], annos["dimensions"], annos["rotation_y"][:, None]], axis=1
            ).reshape(-1, 7)
            input_dict["gt_names"] = annos["name"]
            input_dict["gt_boxes"] = box_utils.boxes3d_kitti_camera_to_lidar(boxes_camera, calib).astype(np.float32)
        points = self.get_lidar(sample_idx)
        if self.fov_points_only:
            points = self.get_fov_points(points, calib, img_shape)
        input_dict["points"] = points
        data_dict = self.prepare_data(input_dict)
        data_dict["image_shape"] = img_shape
        return data_dict

    # ------------------------------------------------------------------ results
    @staticmethod
    def generate_prediction_dicts(batch_dict, pred_dicts, class_names, output_path=None):
        """Per-frame predictions (``pred_boxes`` (N, 7) LiDAR, ``pred_scores``, 1-based ``pred_labels``)
        -> KITTI annotation dicts (with ``frame_id``); with ``output_path`` also ``<frame_id>.txt``
        result files (16 columns, the last one the score)."""
        annos = []
        if output_path is not None:
            output_path = Path(output_path)
            output_path.mkdir(parents=True, exist_ok=True)
        for index, box_dict in enumerate(pred_dicts):
            frame_id = str(batch_dict["frame_id"][index])
            calib = batch_dict["calib"][index]
            image_shape = _to_numpy(batch_dict["image_shape"][index])
            anno = kitti_utils.boxes_lidar_to_kitti_anno(
                _to_numpy(box_dict["pred_boxes"]),
                _to_numpy(box_dict["pred_scores"]),
                _to_numpy(box_dict["pred_labels"]),
                class_names,
                calib,
                image_shape,
            )
            anno["frame_id"] = frame_id
            if output_path is not None:
                kitti_utils.write_kitti_result(output_path / f"{frame_id}.txt", anno)
            annos.append(anno)
        return annos

    def evaluation(self, det_annos, class_names, **kwargs):
        """KITTI AP of ``det_annos`` (in info order) via ``pcdet.datasets.kitti.eval``; (text, dict)."""
        if not self.kitti_infos or "annos" not in self.kitti_infos[0]:
            return "No ground-truth boxes for evaluation", {}
        from pcdet.datasets.kitti import eval as kitti_eval

        if not hasattr(kitti_eval, "get_official_eval_result"):
            raise RuntimeError("pcdet.datasets.kitti.eval has no get_official_eval_result")
        gt_annos = [copy.deepcopy(info["annos"]) for info in self.kitti_infos]
        if len(gt_annos) != len(det_annos):
            raise ValueError(f"evaluation: {len(det_annos)} detection annos for {len(gt_annos)} frames")
        return kitti_eval.get_official_eval_result(gt_annos, copy.deepcopy(det_annos), class_names)


def create_kitti_infos(dataset_cfg, class_names, data_path, save_path=None, workers=4, logger=None,
                       db_classes=DEFAULT_DB_CLASSES):
    """Build the info pickles and the training ground-truth database; returns a summary dict."""
    data_path = resolve_data_path(data_path)
    save_path = data_path if save_path is None else resolve_data_path(save_path)
    save_path.mkdir(parents=True, exist_ok=True)
    dataset = KittiDataset(dataset_cfg, class_names, training=False, root_path=data_path, logger=logger,
                           load_infos=False)
    summary = {}
    split_infos = {}
    for split in ("train", "val"):
        dataset.set_split(split)
        infos = dataset.get_infos(num_workers=workers, has_label=True, count_inside_pts=True)
        split_infos[split] = infos
        out = save_path / f"kitti_infos_{split}.pkl"
        with open(out, "wb") as f:
            pickle.dump(infos, f)
        summary[out.name] = len(infos)
    out = save_path / "kitti_infos_trainval.pkl"
    with open(out, "wb") as f:
        pickle.dump(split_infos["train"] + split_infos["val"], f)
    summary[out.name] = len(split_infos["train"]) + len(split_infos["val"])
    if (data_path / "testing").is_dir() and (data_path / "ImageSets" / "test.txt").is_file():
        dataset.set_split("test")
        infos = dataset.get_infos(num_workers=workers, has_label=False, count_inside_pts=False)
        out = save_path / "kitti_infos_test.pkl"
        with open(out, "wb") as f:
            pickle.dump(infos, f)
        summary[out.name] = len(infos)
    dataset.set_split("train")
    summary["gt_database"] = dataset.create_groundtruth_database(
        save_path / "kitti_infos_train.pkl", used_classes=db_classes, split="train"
    )
    return summary


def main(argv=None):
    parser = argparse.ArgumentParser(description="KITTI dataset tools")
    parser.add_argument("func", choices=["create_kitti_infos"])
    parser.add_argument("--data_path", required=True, help="dataset root (a relative path is taken from the current directory)")
    parser.add_argument("--cfg_file", default=str(DEFAULT_CFG), help="dataset config (default: kitti_dataset.yaml)")
    parser.add_argument("--save_path", default=None, help="where the pickles go (default: the dataset root)")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--classes", nargs="+", default=list(DEFAULT_DB_CLASSES),
                        help="classes written to the ground-truth database")
    args = parser.parse_args(argv)
    from pcdet.utils.common_utils import create_logger

    logger = create_logger()
    dataset_cfg = cfg_from_yaml_file(args.cfg_file)
    save_path = None if args.save_path is None else Path(args.save_path).resolve()
    summary = create_kitti_infos(dataset_cfg, list(args.classes), Path(args.data_path).resolve(), save_path,
                                 workers=args.workers, logger=logger, db_classes=tuple(args.classes))
    for key, val in summary.items():
        logger.info(f"{key}: {val}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
