"""KITTI pipeline end to end: infos, ground-truth database, samples, batches, results.

Real frames (fixture ``real_kitti``) are copied to a temporary folder first, because the infos and
the database are written next to the data. The synthetic dataset goes through the same code.
"""
import importlib.util
import pickle
import shutil
import subprocess
import sys

import numpy as np
import pytest

from pcdet.config import cfg_from_yaml_file
from pcdet.datasets import build_dataloader
from pcdet.datasets.dataset import resolve_data_path
from pcdet.datasets.kitti import kitti_utils
from pcdet.datasets.kitti.kitti_dataset import KittiDataset, create_kitti_infos
from pcdet.utils.box_utils import boxes3d_kitti_camera_to_lidar, points_in_boxes_mask_reference
from pcdet.utils.calibration_kitti import Calibration
from pcdet.utils.object3d_kitti import get_label_anno
from pcdet.utils.paths import REPO_ROOT

CFG_DIR = REPO_ROOT / "tools" / "cfgs" / "dataset_configs"
CLASSES = ["Car", "Pedestrian", "Cyclist"]
PILLAR_RANGE = [0, -39.68, -3, 69.12, 39.68, 1]
_BUILT = {}


def pillar_cfg(name="kitti_dataset.yaml"):
    """The dataset config with PointPillars' range and voxels (as a model config would set them)."""
    cfg = cfg_from_yaml_file(CFG_DIR / name)
    cfg.POINT_CLOUD_RANGE = list(PILLAR_RANGE)
    vox = cfg.DATA_PROCESSOR[-1]
    assert vox.NAME == "transform_points_to_voxels"
    vox.VOXEL_SIZE, vox.MAX_POINTS_PER_VOXEL = [0.16, 0.16, 4], 32
    return cfg


def copy_writable(src, dst):
    shutil.copytree(src, dst, copy_function=shutil.copyfile)
    for p in [dst, *dst.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    return dst


@pytest.fixture
def real_built(real_kitti, tmp_path_factory):
    """A writable copy of the real frames with infos and gt database built (built once per test run)."""
    key = str(real_kitti)
    if key not in _BUILT:
        root = copy_writable(real_kitti, tmp_path_factory.mktemp("real") / "kitti")
        summary = create_kitti_infos(pillar_cfg(), CLASSES, root, workers=2)
        _BUILT[key] = (root, summary)
    return _BUILT[key]


def independent_counts(root, info):
    """Brute-force per-box point counts, recomputed from the raw files without the dataset code."""
    idx = info["point_cloud"]["lidar_idx"]
    points = np.fromfile(root / "training" / "velodyne" / f"{idx}.bin", dtype=np.float32).reshape(-1, 4)
    calib = Calibration(root / "training" / "calib" / f"{idx}.txt")
    png = root / "training" / "image_2" / f"{idx}.png"
    h, w = kitti_utils.read_png_size(png) if png.exists() else kitti_utils.DEFAULT_IMAGE_SHAPE
    rect = calib.lidar_to_rect(points[:, :3])
    proj = rect @ calib.P2[:, :3].T + calib.P2[:, 3]
    u, v = proj[:, 0] / proj[:, 2], proj[:, 1] / proj[:, 2]
    fov = (u >= 0) & (u < w) & (v >= 0) & (v < h) & (proj[:, 2] - calib.P2[2, 3] >= 0)
    label = get_label_anno(root / "training" / "label_2" / f"{idx}.txt")
    care = label["name"] != "DontCare"
    cam = np.c_[label["location"], label["dimensions"], label["rotation_y"]][care]
    boxes = boxes3d_kitti_camera_to_lidar(cam, calib)
    return label["name"][care], boxes, points_in_boxes_mask_reference(points[fov], boxes).sum(axis=1), points


def check_infos_against_bruteforce(root, infos):
    n_boxes = n_agree = 0
    for info in infos:
        names, boxes, counts, _ = independent_counts(root, info)
        annos = info["annos"]
        k = len(names)
        assert annos["name"][:k].tolist() == names.tolist()
        assert (annos["name"][k:] == "DontCare").all() and (annos["num_points_in_gt"][k:] == -1).all()
        np.testing.assert_allclose(annos["gt_boxes_lidar"], boxes, atol=1e-6)
        n_boxes += k
        n_agree += int((annos["num_points_in_gt"][:k] == counts).sum())
    return n_boxes, n_agree


def check_gt_database(root, infos):
    db = pickle.load(open(root / "kitti_dbinfos_train.pkl", "rb"))
    n = 0
    by_frame = {info["point_cloud"]["lidar_idx"]: info for info in infos}
    for name, entries in db.items():
        assert name in CLASSES
        for e in entries:
            pts = np.fromfile(root / e["path"], dtype=np.float32).reshape(-1, 4)
            assert len(pts) == e["num_points_in_gt"]
            _, boxes, _, raw = independent_counts(root, by_frame[e["image_idx"]])
            box = boxes[e["gt_idx"]]
            np.testing.assert_allclose(e["box3d_lidar"], box, atol=1e-5)
            assert points_in_boxes_mask_reference(raw, box[None]).sum() == len(pts)  # full cloud, not FOV
            shifted = pts.copy()
            shifted[:, :3] += e["box3d_lidar"][:3]
            assert points_in_boxes_mask_reference(shifted, box[None]).all()
            n += 1
    return n


def test_real_infos_match_bruteforce_counts(real_built):
    root, summary = real_built
    assert summary["kitti_infos_train.pkl"] == 6 and summary["kitti_infos_trainval.pkl"] == 12
    infos = pickle.load(open(root / "kitti_infos_train.pkl", "rb"))
    shapes = [tuple(int(v) for v in i["image"]["image_shape"]) for i in infos]
    assert shapes[0] == (370, 1224) and shapes[1:] == [(375, 1242)] * 5  # read from the PNG headers
    try:
        from PIL import Image
    except ImportError:
        Image = None
    if Image is not None:  # independent decoder agrees
        for info, (h, w) in zip(infos, shapes):
            with Image.open(root / "training" / "image_2" / f"{info['image']['image_idx']}.png") as im:
                assert im.size == (w, h)
    n_boxes, n_agree = check_infos_against_bruteforce(root, infos)
    print(f"\nreal KITTI: num_points_in_gt equals the brute-force count for {n_agree}/{n_boxes} boxes")
    assert n_boxes >= 10 and n_agree == n_boxes
    assert sum(int(c) for i in infos for c in i["annos"]["num_points_in_gt"] if c > 0) > 1000
    for info in infos:
        annos = info["annos"]
        assert set(annos) >= {"name", "truncated", "occluded", "alpha", "bbox", "dimensions", "location",
                              "rotation_y", "difficulty", "num_points_in_gt", "gt_boxes_lidar"}
        assert set(info) >= {"point_cloud", "image", "calib"} and info["calib"]["P2"].shape == (4, 4)


def test_real_gt_database(real_built):
    root, summary = real_built
    infos = pickle.load(open(root / "kitti_infos_train.pkl", "rb"))
    n = check_gt_database(root, infos)
    assert n == sum(summary["gt_database"].values()) and n >= 5


def test_real_samples_train_and_test(real_built):
    root, _ = real_built
    cfg = pillar_cfg()
    ds = KittiDataset(cfg, CLASSES, training=True, root_path=root)
    assert len(ds) == 6 and ds.grid_size.tolist() == [432, 496, 1]
    np.random.seed(0)
    sampled = 0
    for i in range(len(ds)):
        d = ds[i]
        pts, boxes = d["points"], d["gt_boxes"]
        assert pts.shape[1] == 4 and boxes.shape[1] == 8
        assert ((pts[:, :3] >= PILLAR_RANGE[:3]) & (pts[:, :3] < PILLAR_RANGE[3:])).all()
        assert set(np.unique(boxes[:, 7])) <= {1.0, 2.0, 3.0}
        assert d["voxel_num_points"].sum() <= len(pts) and len(d["voxels"]) > 1000
        sampled += d["num_sampled_gt"]
    assert sampled > 0  # gt_sampling added objects
    _, loader, _ = build_dataloader(cfg, CLASSES, batch_size=4, dist=False, root_path=root, workers=0,
                                    training=False)
    batches = list(loader)
    assert [b["batch_size"] for b in batches] == [4, 2]
    b = batches[0]
    assert b["voxel_coords"].shape[1] == 4 and set(np.unique(b["voxel_coords"][:, 0])) == {0, 1, 2, 3}
    assert b["gt_boxes"].shape[0] == 4 and b["gt_boxes"].shape[2] == 8 and len(b["calib"]) == 4
    assert b["image_shape"].shape == (4, 2) and b["frame_id"].tolist() == ["000000", "000001", "000002", "000003"]


def test_real_prediction_files_and_evaluation(real_built, tmp_path):
    root, _ = real_built
    ds = KittiDataset(pillar_cfg(), CLASSES, training=False, root_path=root)
    batch = ds.collate_batch([ds[i] for i in range(len(ds))])
    preds = []
    for info in ds.kitti_infos:  # ground truth as predictions
        a = info["annos"]
        keep = np.array([n in CLASSES for n in a["name"][: len(a["gt_boxes_lidar"])]], dtype=bool)
        labels = np.array([CLASSES.index(n) + 1 for n in a["name"][: len(keep)][keep]], dtype=np.int64)
        preds.append({"pred_boxes": a["gt_boxes_lidar"][keep], "pred_scores": np.full(keep.sum(), 0.9),
                      "pred_labels": labels})
    det_annos = ds.generate_prediction_dicts(batch, preds, CLASSES, output_path=tmp_path)
    assert len(det_annos) == 6
    for info, det in zip(ds.kitti_infos, det_annos):
        path = tmp_path / f"{det['frame_id']}.txt"
        lines = [ln.split() for ln in path.read_text().splitlines()]
        assert all(len(ln) == 16 and float(ln[15]) == pytest.approx(0.9) for ln in lines)
        back = get_label_anno(path)
        gt = info["annos"]
        keep = np.isin(gt["name"], CLASSES)
        np.testing.assert_allclose(back["location"], gt["location"][keep], atol=0.006)
        np.testing.assert_allclose(back["dimensions"], gt["dimensions"][keep], atol=0.006)
        np.testing.assert_allclose(back["rotation_y"], gt["rotation_y"][keep], atol=0.006)
    text, result = ds.evaluation(det_annos, CLASSES)
    assert "Car" in text and "Pedestrian" in text
    # Perfect boxes score; the same boxes moved 5 m sideways score nothing. (With so few ground-truth
    # objects the devkit's recall sampling keeps the APs of perfect boxes well below 100.)
    for key in ("Car_3d/moderate_R11", "Car_bev/moderate_R11", "Pedestrian_3d/moderate_R11"):
        assert result[key] > 0
    for p in preds:
        p["pred_boxes"] = p["pred_boxes"].copy()
        p["pred_boxes"][:, 1] += 5.0
    moved = ds.generate_prediction_dicts(batch, preds, CLASSES)
    _, result_moved = ds.evaluation(moved, CLASSES)
    assert result_moved["Car_3d/moderate_R11"] == 0 and result_moved["Pedestrian_3d/moderate_R11"] == 0
    # The head decodes headings in [offset, offset + 2 pi): result files still carry ry, alpha in [-pi, pi).
    for p in preds:
        p["pred_boxes"][:, 1] -= 5.0
        p["pred_boxes"][:, 6] += 2 * np.pi * np.where(np.arange(len(p["pred_boxes"])) % 2 == 0, 1, -2)
    wrapped = ds.generate_prediction_dicts(batch, preds, CLASSES)
    for det, ref in zip(wrapped, det_annos):
        for key in ("rotation_y", "alpha"):
            assert np.all(det[key] >= -np.pi) and np.all(det[key] < np.pi)
            np.testing.assert_allclose(det[key], ref[key], atol=1e-6)


def test_worker_seeding_is_reproducible_and_varies_by_epoch(real_built):
    root, _ = real_built
    cfg = pillar_cfg()
    cfg.DATA_AUGMENTOR.DISABLE_AUG_LIST = ["gt_sampling"]

    def two_epochs(seed):
        _, loader, _ = build_dataloader(cfg, CLASSES, batch_size=3, dist=False, root_path=root, workers=2,
                                        seed=seed, training=True)
        epochs = []
        for _ in range(2):
            rec = {}
            for b in loader:
                rec.update(zip(b["frame_id"].tolist(), b["noise_rot"].tolist()))
            epochs.append(rec)
        return epochs

    first, again = two_epochs(5), two_epochs(5)
    assert first == again and len(first[0]) == 6
    assert first[0] != first[1]  # a new draw every epoch
    assert len(set(first[0].values())) == 6  # and per worker / frame


def test_data_path_is_relative_to_repo_root(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = cfg_from_yaml_file(CFG_DIR / "synthetic_kitti_dataset.yaml")
    assert cfg.DATA_PATH == "data/synthetic_kitti" and cfg.DATASET == "KittiDataset"
    assert cfg.POINT_CLOUD_RANGE == [0, -40, -3, 70.4, 40, 1]  # inherited from kitti_dataset.yaml
    assert resolve_data_path(cfg.DATA_PATH) == REPO_ROOT / "data" / "synthetic_kitti"
    assert resolve_data_path(tmp_path) == tmp_path


@pytest.mark.skipif(importlib.util.find_spec("pcdet.datasets.synthetic.__main__") is None,
                    reason="synthetic dataset generator not available")
def test_synthetic_dataset_same_pipeline(tmp_path):
    from pcdet.datasets.synthetic.__main__ import main as generate

    root = tmp_path / "synthetic_kitti"
    assert generate(["--format", "kitti", "--out", str(root), "--frames", "8", "--seed", "3", "--quiet"]) in (0, None)
    cmd = [sys.executable, "-m", "pcdet.datasets.kitti.kitti_dataset", "create_kitti_infos", "--data_path", str(root),
           "--cfg_file", str(CFG_DIR / "synthetic_kitti_dataset.yaml"), "--workers", "1"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    for name in ("kitti_infos_train.pkl", "kitti_infos_val.pkl", "kitti_infos_trainval.pkl", "kitti_dbinfos_train.pkl"):
        assert (root / name).is_file()
    infos = pickle.load(open(root / "kitti_infos_trainval.pkl", "rb"))
    assert len(infos) == 8
    n_boxes, n_agree = check_infos_against_bruteforce(root, infos)
    print(f"\nsynthetic KITTI: num_points_in_gt equals the brute-force count for {n_agree}/{n_boxes} boxes")
    assert n_boxes > 0 and n_agree == n_boxes
    assert check_gt_database(root, pickle.load(open(root / "kitti_infos_train.pkl", "rb"))) > 0

    cfg = pillar_cfg("synthetic_kitti_dataset.yaml")
    ds, loader, _ = build_dataloader(cfg, CLASSES, batch_size=2, dist=False, root_path=root, workers=0, seed=0,
                                     training=True)
    assert [n for n, _ in ds.data_augmentor.steps][0] == "gt_sampling"
    np.random.seed(1)
    n_sampled = 0
    for batch in loader:
        assert batch["voxels"].shape[1:] == (32, 4) and len(batch["voxels"]) > 0
        assert batch["voxel_coords"].shape == (len(batch["voxels"]), 4)
        assert batch["gt_boxes"].shape[0] == batch["batch_size"]
        n_sampled += int(batch["num_sampled_gt"].sum())
    assert n_sampled > 0
