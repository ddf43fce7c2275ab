"""Bad KITTI input gives an error naming the file; empty clouds flow through with a warning.

Uses a tiny hand-made dataset in the KITTI layout (no real data needed).
"""
import re
import warnings

import numpy as np
import pytest

from pcdet.config import ConfigKeyError, cfg_from_yaml_file
from pcdet.datasets.dataset import DatasetFileError
from pcdet.datasets.kitti.kitti_dataset import KittiDataset, create_kitti_infos
from pcdet.utils.box_utils import boxes3d_kitti_camera_to_lidar, points_in_boxes_mask_reference
from pcdet.utils.calibration_kitti import Calibration, CalibrationError, write_calib_file
from pcdet.utils.object3d_kitti import LabelError, format_label_line
from pcdet.utils.paths import REPO_ROOT

CLASSES = ["Car", "Pedestrian", "Cyclist"]
P2 = np.array([[721.5, 0, 609.6, 44.9], [0, 721.5, 172.9, 0.2], [0, 0, 1, 0.003]])
V2C = np.array([[0, -1, 0, 0], [0, 0, -1, -0.08], [1, 0, 0, -0.27]], dtype=np.float64)
# A car 15 m ahead in camera coordinates (bottom centre), and one 30 m ahead to the left.
CARS = [((0.5, 1.65, 15.0), 0.1), ((-4.0, 1.65, 30.0), -1.2)]


def _cfg():
    cfg = cfg_from_yaml_file(REPO_ROOT / "tools" / "cfgs" / "dataset_configs" / "kitti_dataset.yaml")
    cfg.POINT_CLOUD_RANGE = [0, -39.68, -3, 69.12, 39.68, 1]
    cfg.DATA_PROCESSOR[-1].VOXEL_SIZE = [0.16, 0.16, 4]
    cfg.DATA_PROCESSOR[-1].MAX_POINTS_PER_VOXEL = 32
    return cfg


def make_mini_kitti(root, n_frames=3, seed=0):
    rng = np.random.default_rng(seed)
    for sub in ("velodyne", "label_2", "calib"):
        (root / "training" / sub).mkdir(parents=True)
    (root / "ImageSets").mkdir()
    ids = [f"{i:06d}" for i in range(n_frames)]
    for split in ("train", "val"):
        (root / "ImageSets" / f"{split}.txt").write_text("\n".join(ids) + "\n")
    calib = Calibration({"P2": P2, "R0_rect": np.eye(3), "Tr_velo_to_cam": V2C})
    for idx in ids:
        write_calib_file(root / "training" / "calib" / f"{idx}.txt",
                         {"P2": P2, "R0_rect": np.eye(3), "Tr_velo_to_cam": V2C})
        lines, pts, boxes = [], [], []
        for (x, y, z), ry in CARS:
            lines.append(format_label_line("Car", 0.0, 0, ry, (500, 150, 600, 250), (1.5, 1.6, 3.9), (x, y, z), ry))
            # 80 points well inside the box, in the LiDAR frame
            box = boxes3d_kitti_camera_to_lidar(np.array([[x, y, z, 3.9, 1.5, 1.6, ry]]), calib)[0]
            boxes.append(box)
            local = rng.uniform(-0.45, 0.45, size=(80, 3)) * box[3:6]
            c, s_ = np.cos(box[6]), np.sin(box[6])
            pts.append(np.c_[local[:, 0] * c - local[:, 1] * s_, local[:, 0] * s_ + local[:, 1] * c, local[:, 2]] + box[:3])
        lines.append("DontCare -1 -1 -10 1.0 2.0 30.0 40.0 -1 -1 -1 -1000 -1000 -1000 -10")
        (root / "training" / "label_2" / f"{idx}.txt").write_text("\n".join(lines) + "\n")
        background = rng.uniform([2, -20, -2], [60, 20, 0.5], size=(2000, 3))
        pts.append(background[~points_in_boxes_mask_reference(background, np.array(boxes)).any(axis=0)])
        xyz = np.concatenate(pts)
        np.c_[xyz, rng.uniform(0, 1, len(xyz))].astype(np.float32).tofile(root / "training" / "velodyne" / f"{idx}.bin")
    return root


@pytest.fixture
def mini(tmp_path):
    return make_mini_kitti(tmp_path / "kitti")


def _named(path):
    return re.escape(str(path))


def test_mini_dataset_is_valid(mini):
    create_kitti_infos(_cfg(), CLASSES, mini, workers=1)
    ds = KittiDataset(_cfg(), CLASSES, training=False, root_path=mini)
    assert len(ds) == 3
    assert ds.kitti_infos[0]["annos"]["num_points_in_gt"].tolist()[:2] == [80, 80]
    assert len(ds[0]["gt_boxes"]) == 2


def test_velodyne_size_not_multiple_of_16(mini):
    bad = mini / "training" / "velodyne" / "000001.bin"
    bad.write_bytes(bad.read_bytes()[:-4])
    with pytest.raises(DatasetFileError, match=_named(bad) + r".*not a multiple of 16"):
        create_kitti_infos(_cfg(), CLASSES, mini, workers=1)


def test_velodyne_truncated_after_infos_were_built(mini):
    create_kitti_infos(_cfg(), CLASSES, mini, workers=1)
    bad = mini / "training" / "velodyne" / "000002.bin"
    bad.write_bytes(bad.read_bytes()[:-8])
    ds = KittiDataset(_cfg(), CLASSES, training=False, root_path=mini)
    with pytest.raises(DatasetFileError, match=_named(bad)):
        ds[2]


def test_missing_velodyne(mini):
    gone = mini / "training" / "velodyne" / "000000.bin"
    gone.unlink()
    with pytest.raises(DatasetFileError, match="point cloud file not found: " + _named(gone)):
        create_kitti_infos(_cfg(), CLASSES, mini, workers=1)


def test_missing_label(mini):
    gone = mini / "training" / "label_2" / "000002.txt"
    gone.unlink()
    with pytest.raises(LabelError, match="label file not found: " + _named(gone)):
        create_kitti_infos(_cfg(), CLASSES, mini, workers=2)


def test_missing_calib(mini):
    gone = mini / "training" / "calib" / "000001.txt"
    gone.unlink()
    with pytest.raises(CalibrationError, match=_named(gone)):
        create_kitti_infos(_cfg(), CLASSES, mini, workers=1)


def test_missing_calib_at_load_time(mini):
    create_kitti_infos(_cfg(), CLASSES, mini, workers=1)
    gone = mini / "training" / "calib" / "000000.txt"
    gone.unlink()
    ds = KittiDataset(_cfg(), CLASSES, training=False, root_path=mini)
    with pytest.raises(CalibrationError, match=_named(gone)):
        ds[0]


@pytest.mark.parametrize(
    "line, reason",
    [("Car 0.00 0 0.1 500 150 600 250 1.5 1.6 3.9 0.5 1.65", "expected 15 columns, got 13"),
     ("Car 0.00 0 0.1 500 150 600 250 1.5 1.6 3.9 0.5 1.65 15.0 abc", "non-numeric field")],
)
def test_malformed_label_line_names_file_and_line(mini, line, reason):
    label = mini / "training" / "label_2" / "000001.txt"
    rows = label.read_text().splitlines()
    rows[1] = line
    label.write_text("\n".join(rows) + "\n")
    with pytest.raises(LabelError, match=_named(label) + ":2: " + reason):
        create_kitti_infos(_cfg(), CLASSES, mini, workers=1)


def test_unknown_key_in_augmentor_and_processor_sections(mini):
    create_kitti_infos(_cfg(), CLASSES, mini, workers=1)
    cfg = _cfg()
    cfg.DATA_AUGMENTOR.AUG_CONFIG_LIST[1]["ALONG_AXIS"] = ["x"]
    with pytest.raises(ConfigKeyError, match=r"AUG_CONFIG_LIST\[1\] \(random_world_flip\).*'ALONG_AXIS'"):
        KittiDataset(cfg, CLASSES, training=True, root_path=mini)
    cfg = _cfg()
    cfg.DATA_AUGMENTOR.AUG_CONFIG_LIST[0]["SAMPLE_GROUP"] = ["Car:3"]
    with pytest.raises(ConfigKeyError, match=r"gt_sampling.*'SAMPLE_GROUP'"):
        KittiDataset(cfg, CLASSES, training=True, root_path=mini)
    cfg = _cfg()
    cfg.DATA_PROCESSOR[2]["VOXEL_SIZES"] = [0.1, 0.1, 0.1]
    with pytest.raises(ConfigKeyError, match=r"DATA_PROCESSOR\[2\] \(transform_points_to_voxels\).*'VOXEL_SIZES'"):
        KittiDataset(cfg, CLASSES, training=False, root_path=mini)
    cfg = _cfg()
    cfg.POINT_FEATURE_ENCODING["used_features"] = ["x"]
    with pytest.raises(ConfigKeyError, match="POINT_FEATURE_ENCODING.*'used_features'"):
        KittiDataset(cfg, CLASSES, training=False, root_path=mini)


def test_missing_info_and_database_files_are_named(mini):
    with pytest.raises(DatasetFileError, match=_named(mini / "kitti_infos_val.pkl") + ".*create_kitti_infos"):
        KittiDataset(_cfg(), CLASSES, training=False, root_path=mini)
    (mini / "kitti_infos_train.pkl").write_bytes(b"")  # present, so the database is the next missing file
    with pytest.raises(ValueError, match=_named(mini / "kitti_dbinfos_train.pkl")):
        KittiDataset(_cfg(), CLASSES, training=True, root_path=mini)
    cfg = _cfg()
    cfg.DATA_AUGMENTOR.DISABLE_AUG_LIST = ["gt_sampling"]
    with pytest.raises(DatasetFileError, match=_named(mini / "kitti_infos_train.pkl") + ": not a readable pickle"):
        KittiDataset(cfg, CLASSES, training=True, root_path=mini)


def test_empty_and_out_of_range_clouds_flow_through(mini):
    (mini / "training" / "velodyne" / "000000.bin").write_bytes(b"")
    behind = np.c_[np.random.default_rng(0).uniform([-30, -10, -2], [-1, 10, 0], size=(500, 3)), np.zeros(500)]
    behind.astype(np.float32).tofile(mini / "training" / "velodyne" / "000001.bin")
    create_kitti_infos(_cfg(), CLASSES, mini, workers=1)
    ds = KittiDataset(_cfg(), CLASSES, training=False, root_path=mini)
    assert ds.kitti_infos[0]["annos"]["num_points_in_gt"].tolist() == [0, 0, -1]
    with pytest.warns(UserWarning, match="frame 000000: the point cloud is empty"):
        d0 = ds[0]
    # frame 1: all points behind the camera (outside the image and the range)
    with pytest.warns(UserWarning, match="frame 000001"):
        d1 = ds[1]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        d2 = ds[2]
    for d in (d0, d1):
        assert d["points"].shape == (0, 4) and d["voxels"].shape == (0, 32, 4)
        assert d["voxel_coords"].shape == (0, 3) and len(d["gt_boxes"]) == 2
    batch = ds.collate_batch([d0, d1, d2])
    assert batch["batch_size"] == 3 and set(np.unique(batch["voxel_coords"][:, 0])) == {2}
    assert batch["points"].shape == (len(d2["points"]), 5) and batch["gt_boxes"].shape == (3, 2, 8)

    # Training with the global augmentations also copes with an empty frame.
    cfg = _cfg()
    cfg.DATA_AUGMENTOR.DISABLE_AUG_LIST = ["gt_sampling"]
    train = KittiDataset(cfg, CLASSES, training=True, root_path=mini)
    with pytest.warns(UserWarning, match="frame 000000"):
        t0 = train[0]
    assert t0["voxels"].shape[0] == 0
    assert train.collate_batch([t0, train[2]])["voxels"].shape[0] > 0
