"""SemanticKITTI dataset: the real scan loads with its labels, augmentation keeps per-point labels
aligned (the drawn transform inverts back to the raw scan), bad input names the file, and the
embedded writer produces the same layout (with its class report)."""
import json
import shutil

import numpy as np
import pytest

from pcdet.config import ConfigKeyError, cfg_from_yaml_file
from pcdet.datasets.dataset import DatasetFileError
from pcdet.datasets.semantickitti import label_map
from pcdet.datasets.semantickitti.semantickitti_dataset import SemanticKittiDataset
from pcdet.utils.common_utils import rotate_points_along_z
from pcdet.utils.paths import REPO_ROOT
from tests.helpers import require_realdata

CFG = REPO_ROOT / "tools" / "cfgs" / "dataset_configs" / "semantickitti_dataset.yaml"
N_REAL = 124668


def _cfg(**overrides):
    cfg = cfg_from_yaml_file(CFG)
    cfg.update(overrides)
    return cfg


def _dataset(root, training=False, split="val", seqs=("00",), **overrides):
    cfg = _cfg(DATA_SPLIT={"train": split, "test": split}, SEQUENCES={split: list(seqs)}, **overrides)
    return SemanticKittiDataset(cfg, label_map.CLASS_NAMES, training=training, root_path=root)


def _copy_real(tmp_path, seq="00"):
    src = require_realdata("semantickitti") / "sequences" / "00"
    dst = tmp_path / "sequences" / seq
    shutil.copytree(src, dst)
    return tmp_path, dst


def test_real_scan_loads_with_learning_labels_and_the_cylinder_grid():
    ds = _dataset(require_realdata("semantickitti"))
    assert len(ds) == 1 and ds.dataset_note == "SemanticKITTI"
    sample = ds[0]
    assert sample["frame_id"] == "00/000000" and sample["num_points_raw"] == N_REAL
    assert sample["points"].shape == (N_REAL, 4) and sample["point_labels"].shape == (N_REAL,)
    assert sample["point_grid_ind"].shape == (N_REAL, 3) and sample["point_cyl_features"].shape == (N_REAL, 9)
    assert (sample["point_grid_ind"] >= 0).all() and (sample["point_grid_ind"] < np.array([480, 360, 32])).all()
    raw, _ = label_map.read_label_file(require_realdata("semantickitti") / "sequences/00/labels/000000.label")
    np.testing.assert_array_equal(sample["point_labels"], label_map.to_learning(raw))


def test_augmentation_keeps_labels_aligned_and_records_an_invertible_transform():
    ds = _dataset(require_realdata("semantickitti"), training=True, split="train")
    raw_pts = ds.get_lidar("00", "000000")
    raw_lab, _ = ds.get_labels("00", "000000", len(raw_pts))
    np.random.seed(3)
    s = ds[0]
    np.testing.assert_array_equal(s["point_labels"], raw_lab)  # nothing reordered or dropped
    xyz = s["points"][:, :3].astype(np.float64) - s["noise_translate"]
    xyz[:, :2] /= s["noise_scale"]  # Cylinder3D's scale_aug: x and y only (SCALE_AXES [x, y])
    # the steps ran rotation, flip x (y -> -y), flip y (x -> -x), scaling, translation: undo in reverse
    if s["flip_y"]:
        xyz[:, 0] = -xyz[:, 0]
    if s["flip_x"]:
        xyz[:, 1] = -xyz[:, 1]
    xyz = rotate_points_along_z(xyz[None], np.array([-s["noise_rot"]]))[0]
    np.testing.assert_allclose(xyz, raw_pts[:, :3], atol=2e-3)
    assert abs(s["noise_rot"]) <= np.pi / 4 and 0.95 <= s["noise_scale"] <= 1.05


def test_a_test_split_has_no_labels(tmp_path):
    root, dst = _copy_real(tmp_path, "11")
    shutil.rmtree(dst / "labels")
    ds = _dataset(root, split="test", seqs=("11",))
    sample = ds[0]
    assert "point_labels" not in sample and sample["frame_id"] == "11/000000"
    assert ds.prediction_layout_ok()


def test_label_file_shorter_than_its_scan_is_an_error_naming_it(tmp_path):
    root, dst = _copy_real(tmp_path)
    lab = dst / "labels" / "000000.label"
    data = np.fromfile(lab, dtype=np.uint32)
    lab.chmod(0o644)
    data[:-5].tofile(lab)
    with pytest.raises(label_map.LabelFileError, match=f"{lab}: {N_REAL - 5} labels for a scan of {N_REAL} points"):
        _dataset(root)[0]


def test_unknown_raw_id_is_an_error_naming_the_file(tmp_path):
    root, dst = _copy_real(tmp_path)
    lab = dst / "labels" / "000000.label"
    data = np.fromfile(lab, dtype=np.uint32)
    data[10] = 7  # not a SemanticKITTI id
    lab.chmod(0o644)
    data.tofile(lab)
    with pytest.raises(label_map.LabelFileError, match=r"000000\.label: unknown SemanticKITTI raw id\(s\) \[7\]"):
        _dataset(root)[0]


def test_missing_label_or_scan_and_corrupt_scan_name_the_file(tmp_path):
    root, dst = _copy_real(tmp_path)
    (dst / "labels" / "000000.label").unlink()
    with pytest.raises(label_map.LabelFileError, match="label file not found: .*000000.label"):
        _dataset(root)[0]
    scan = dst / "velodyne" / "000000.bin"
    scan.chmod(0o644)
    scan.write_bytes(scan.read_bytes()[:-6])
    with pytest.raises(DatasetFileError, match="000000.bin: size .* not a multiple of 16"):
        _dataset(root).get_lidar("00", "000000")
    with pytest.raises(DatasetFileError, match="sequence 08 of split 'val' not found"):
        _dataset(root, seqs=("08",))
    with pytest.raises(DatasetFileError, match="sequences folder not found"):
        _dataset(tmp_path / "nowhere")


def test_config_errors_name_the_key(tmp_path):
    root, _ = _copy_real(tmp_path)
    with pytest.raises(ConfigKeyError, match="FOV_ANGEL"):
        _dataset(root, FOV_ANGEL=90)
    with pytest.raises(ValueError, match="CLASS_NAMES of a SemanticKITTI config"):
        SemanticKittiDataset(_cfg(), ["car"], training=False, root_path=root)


def test_fov_crop_keeps_the_front_and_says_so():
    ds = _dataset(require_realdata("semantickitti"), FOV_ANGLE=90)
    s = ds[0]
    ang = np.degrees(np.arctan2(s["points"][:, 1], s["points"][:, 0]))
    assert np.abs(ang).max() <= 45 and 20000 < len(s["points"]) < N_REAL
    assert len(s["point_labels"]) == len(s["points"]) and "front 90 deg crop" in ds.dataset_note
    assert not ds.prediction_layout_ok()


def test_embedded_writer_layout_and_class_report(tmp_path):
    from pcdet.datasets.synthetic import generate_dataset
    from pcdet.datasets.synthetic.seg_stats import compare

    root = tmp_path / "syn"
    generate_dataset(root, 5, seed=0, val_fraction=0.4, fmt="semantickitti")
    frames = json.loads((root / "frames.json").read_text())
    assert sorted(frames.values()) == ["00/000000", "00/000001", "00/000002", "08/000000", "08/000001"]
    cfg_kw = {"SKIP_MISSING_SEQUENCES": True}
    train = SemanticKittiDataset(_cfg(DATA_SPLIT={"train": "train", "test": "val"}, **cfg_kw), label_map.CLASS_NAMES,
                                 training=False, root_path=root)
    assert train.sequences == ["08"] and len(train) == 2
    assert train.dataset_note.startswith("EMBEDDED SYNTHETIC dataset in the SemanticKITTI format")
    s = train[0]
    assert len(s["point_labels"]) == len(s["points"]) > 50000 and s["point_labels"].max() <= 19
    rep = compare(root, require_realdata("semantickitti"))
    assert abs(sum(rep["synthetic"]["share_percent"].values()) - 100) < 1e-6
    assert "fence" in rep["classes_never_in_synthetic"] and "car" not in rep["classes_never_in_synthetic"]
    assert rep["official_miou_cap_percent"] == pytest.approx(100 * (19 - len(rep["classes_never_in_synthetic"])) / 19)
