"""Synthetic KITTI dataset: layout, file formats, determinism, label/point consistency, bad input."""
import json

import numpy as np
import pytest

from pcdet.datasets.synthetic import MANIFEST_NAME, FrameGenerator, OutputDirError, generate_dataset
from pcdet.datasets.synthetic.__main__ import main as cli_main
from pcdet.datasets.synthetic.generator import IMAGE_SHAPE, KITTI_CALIB
from pcdet.utils import box_utils
from pcdet.utils.calibration_kitti import CALIB_KEYS, Calibration, read_calib_file
from pcdet.utils.object3d_kitti import get_label_anno

SEED = 7
FRAMES = 6


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("syn") / "kitti"
    generate_dataset(out, FRAMES, seed=SEED, val_fraction=0.5)
    return out


def _ids(n):
    return ["%06d" % i for i in range(n)]


def _files(root):
    return sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())


def test_layout_and_manifest(dataset):
    for sub, ext in (("velodyne", "bin"), ("label_2", "txt"), ("calib", "txt")):
        names = sorted(p.name for p in (dataset / "training" / sub).iterdir())
        assert names == [f"{i}.{ext}" for i in _ids(FRAMES)]
    train = (dataset / "ImageSets" / "train.txt").read_text().split()
    val = (dataset / "ImageSets" / "val.txt").read_text().split()
    assert len(val) == 3 and len(train) == 3
    assert sorted(train + val) == _ids(FRAMES)
    manifest = json.loads((dataset / MANIFEST_NAME).read_text())
    assert manifest["seed"] == SEED and manifest["frames"] == FRAMES and manifest["format"] == "kitti"
    assert manifest["val_fraction"] == 0.5 and manifest["complete"] is True and "generator_version" in manifest


def test_file_formats(dataset):
    for idx in _ids(FRAMES):
        raw = (dataset / "training" / "velodyne" / f"{idx}.bin").read_bytes()
        assert len(raw) % 16 == 0
        pts = np.frombuffer(raw, dtype=np.float32).reshape(-1, 4)
        assert 80_000 < len(pts) < 140_000  # KITTI sweeps have ~100k-130k points
        assert np.isfinite(pts).all() and pts[:, 3].min() >= 0.0 and pts[:, 3].max() <= 1.0
        rng = np.linalg.norm(pts[:, :3], axis=1)
        assert rng.max() < 121.0
        for line in (dataset / "training" / "label_2" / f"{idx}.txt").read_text().splitlines():
            assert len(line.split()) == 15
        get_label_anno(dataset / "training" / "label_2" / f"{idx}.txt", allow_score=False)
        mats = read_calib_file(dataset / "training" / "calib" / f"{idx}.txt")
        assert tuple(mats) == CALIB_KEYS
        for key, vals in KITTI_CALIB.items():
            np.testing.assert_allclose(mats[key].reshape(-1), vals, rtol=1e-9)


def test_same_seed_same_bytes_other_seed_differs(dataset, tmp_path):
    again = tmp_path / "again"
    generate_dataset(again, 3, seed=SEED, val_fraction=0.5)
    for sub, ext in (("velodyne", "bin"), ("label_2", "txt"), ("calib", "txt")):
        for idx in _ids(3):
            a = (dataset / "training" / sub / f"{idx}.{ext}").read_bytes()
            assert a == (again / "training" / sub / f"{idx}.{ext}").read_bytes(), f"{sub}/{idx} differs"
    other = tmp_path / "other"
    generate_dataset(other, 2, seed=SEED + 1)
    for idx in _ids(2):
        assert (dataset / "training" / "velodyne" / f"{idx}.bin").read_bytes() != (
            other / "training" / "velodyne" / f"{idx}.bin").read_bytes()
        assert (dataset / "training" / "label_2" / f"{idx}.txt").read_bytes() != (
            other / "training" / "label_2" / f"{idx}.txt").read_bytes()


def test_frame_depends_only_on_seed_and_index(dataset):
    # A fresh generator asked for frame 4 alone reproduces the file written after frames 0-3.
    frame = FrameGenerator(SEED).generate(4)
    assert frame["points"].tobytes() == (dataset / "training" / "velodyne" / "000004.bin").read_bytes()


def test_identical_rerun_regenerates_in_place(dataset, tmp_path):
    out = tmp_path / "rerun"
    generate_dataset(out, 2, seed=3)
    before = {p: (out / p).read_bytes() for p in _files(out)}
    generate_dataset(out, 2, seed=3)
    assert {p: (out / p).read_bytes() for p in _files(out)} == before


def test_labels_match_their_projection_and_points(dataset):
    n_obj = n_with_points = 0
    H, W = IMAGE_SHAPE
    for idx in _ids(FRAMES):
        root = dataset / "training"
        anno = get_label_anno(root / "label_2" / f"{idx}.txt")
        calib = Calibration(root / "calib" / f"{idx}.txt")
        pts = np.fromfile(root / "velodyne" / f"{idx}.bin", dtype=np.float32).reshape(-1, 4)
        real = anno["name"] != "DontCare"
        dc = ~real
        # DontCare lines follow KITTI's convention.
        assert np.all(anno["location"][dc] == -1000) and np.all(anno["rotation_y"][dc] == -10)
        assert np.all(anno["bbox"][:, [0, 1]] >= 0) and np.all(anno["bbox"][:, 2] <= W - 1)
        assert np.all(anno["bbox"][:, 3] <= H - 1)
        if not real.any():
            continue
        cam = np.concatenate([anno["location"], anno["dimensions"], anno["rotation_y"][:, None]], axis=1)[real]
        assert np.all(cam[:, 2] > 0)  # in front of the camera
        proj = box_utils.boxes3d_kitti_camera_to_imageboxes(cam, calib, image_shape=IMAGE_SHAPE)
        np.testing.assert_allclose(anno["bbox"][real], proj, atol=3.0)  # labels are rounded to 0.01
        # alpha = ry - viewing angle
        alpha = anno["rotation_y"][real] - np.arctan2(cam[:, 0], cam[:, 2])
        d = np.angle(np.exp(1j * (alpha - anno["alpha"][real])))
        assert np.abs(d).max() < 0.02
        assert np.all((anno["occluded"][real] >= 0) & (anno["occluded"][real] <= 3))
        assert np.all((anno["truncated"][real] >= 0) & (anno["truncated"][real] < 1))
        lidar = box_utils.boxes3d_kitti_camera_to_lidar(cam, calib)
        mask = box_utils.points_in_boxes_mask_reference(pts, lidar)
        n_obj += len(lidar)
        n_with_points += int((mask.sum(axis=1) > 0).sum())
    assert n_obj > 10
    assert n_with_points / n_obj >= 0.9


def test_camera_fov_rule_and_point_labels():
    gen = FrameGenerator(SEED)
    frame = gen.generate(1)
    pts, sem, inst = frame["points"], frame["semantic"], frame["instance"]
    assert len(sem) == len(inst) == len(pts)
    # Full 360-degree sweep.
    az = np.degrees(np.arctan2(pts[:, 1], pts[:, 0]))
    assert np.histogram(az, bins=12, range=(-180, 180))[0].min() > 0
    # Objects exist behind the car (points with an instance id) but no label is behind the camera.
    assert np.any((inst > 0) & (pts[:, 0] < -5))
    for lb in frame["labels"]:
        assert lb["name"] == "DontCare" or lb["loc"][2] > 0
    # Semantic classes of the scene (SemanticKITTI ids) and instance ids only on object classes.
    assert {40, 48, 10}.issubset(set(np.unique(sem).tolist()))
    assert np.all(np.isin(sem[inst > 0], [10, 11, 18, 20, 30, 31]))
    assert np.all(np.isin(sem[inst == 0], [40, 48, 50, 60, 70, 71, 72, 80, 81]))


@pytest.mark.parametrize("argv, needle", [
    (["--format", "nuscenes", "--frames", "2"], "nuscenes"),
    (["--frames", "0"], "frames"),
    (["--frames", "-3"], "frames"),
    (["--frames", "2", "--val_fraction", "1.5"], "val_fraction"),
    (["--frames", "2", "--val_fraction", "-0.1"], "val_fraction"),
])
def test_cli_rejects_bad_arguments(tmp_path, capsys, argv, needle):
    out = tmp_path / "x"
    with pytest.raises(SystemExit) as err:
        cli_main(["--out", str(out)] + argv + ["--quiet"])
    assert err.value.code == 2
    assert needle in capsys.readouterr().err
    assert not out.exists()


def test_api_rejects_bad_arguments(tmp_path):
    for kwargs, needle in (({"fmt": "waymo"}, "waymo"), ({"frames": 0}, "frames"),
                           ({"val_fraction": 2.0}, "val_fraction"), ({"seed": -1}, "seed")):
        args = dict(out_dir=tmp_path / "y", frames=1, seed=0, val_fraction=0.5, fmt="kitti")
        args.update(kwargs)
        with pytest.raises(ValueError, match=needle):
            generate_dataset(**args)
    assert not (tmp_path / "y").exists()


def test_refuses_folder_with_other_dataset(tmp_path, capsys):
    out = tmp_path / "ds"
    generate_dataset(out, 1, seed=1)
    before = {p: (out / p).read_bytes() for p in _files(out)}
    with pytest.raises(OutputDirError, match=str(out)) as err:
        generate_dataset(out, 2, seed=1)
    assert "frames" in str(err.value)
    with pytest.raises(SystemExit) as exit_err:
        cli_main(["--out", str(out), "--frames", "1", "--seed", "2", "--quiet"])
    assert exit_err.value.code == 2
    stderr = capsys.readouterr().err
    assert str(out) in stderr and "seed" in stderr
    assert {p: (out / p).read_bytes() for p in _files(out)} == before


def test_refuses_kitti_files_without_manifest(tmp_path):
    out = tmp_path / "realkitti"
    (out / "training" / "velodyne").mkdir(parents=True)
    (out / "training" / "velodyne" / "000000.bin").write_bytes(b"\0" * 16)
    with pytest.raises(OutputDirError, match=str(out)):
        generate_dataset(out, 1, seed=0)
    assert (out / "training" / "velodyne" / "000000.bin").read_bytes() == b"\0" * 16
    assert not (out / MANIFEST_NAME).exists()


def test_worker_processes_write_identical_files(dataset, tmp_path):
    out = tmp_path / "workers"
    generate_dataset(out, 3, seed=SEED, workers=2)
    for sub, ext in (("velodyne", "bin"), ("label_2", "txt")):
        for idx in _ids(3):
            assert (out / "training" / sub / f"{idx}.{ext}").read_bytes() == (
                dataset / "training" / sub / f"{idx}.{ext}").read_bytes()
