"""The real SemanticKITTI scan through the standard tools: ``tools/train.py`` trains the CPU-scale
Cylinder3D a few steps on it (checkpoints, train_stats, the mIoU evaluation), and ``tools/test.py``
on a test split (no labels) writes the prediction file in the official submission layout."""
import importlib.util
import json
import shutil

import numpy as np

from pcdet.datasets.semantickitti import label_map
from pcdet.utils.paths import REPO_ROOT
from tests.helpers import require_realdata

CFG = REPO_ROOT / "tools" / "cfgs" / "synthetic_seg_models" / "cylinder3d_0.5x.yaml"


def _tool(name):
    spec = importlib.util.spec_from_file_location(f"pcdet_tools_{name}", REPO_ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def test_real_scan_trains_evaluates_and_writes_a_submission_file(tmp_path):
    real = require_realdata("semantickitti")
    root = tmp_path / "semantickitti"
    shutil.copytree(real / "sequences" / "00", root / "sequences" / "00")
    (root / "sequences" / "11" / "velodyne").mkdir(parents=True)  # a test sequence: the same scan, no labels
    shutil.copy(real / "sequences" / "00" / "velodyne" / "000000.bin", root / "sequences" / "11" / "velodyne")
    out = tmp_path / "out"
    common = ["DATA_CONFIG.SEQUENCES", "{'train': ['00'], 'val': ['00'], 'test': ['11']}", "DATA_CONFIG.FOV_ANGLE", "360"]
    _tool("train")(["--cfg_file", str(CFG), "--data_path", str(root), "--epochs", "2", "--batch_size", "1",
                    "--workers", "0", "--output_root", str(out), "--no_progress", "--set", *common])
    run = out / "synthetic_seg_models" / "cylinder3d_0.5x" / "default"
    stats = json.loads((run / "train_stats.json").read_text())
    assert [e["iterations"] for e in stats["epochs"]] == [1, 1]
    assert (run / "ckpt" / "checkpoint_epoch_2.pth").is_file() and list((run / "tensorboard").iterdir())
    metrics = json.loads((run / "eval" / "epoch_2" / "val" / "metrics.json").read_text())
    assert metrics["metrics"]["points"] == 124668 - int((label_map.to_learning(
        label_map.read_label_file(root / "sequences/00/labels/000000.label")[0]) == 0).sum())
    assert {"miou", "miou_present", "acc", "iou/car", "iou/traffic-sign"} <= set(metrics["metrics"])
    assert metrics["dataset_note"] == "SemanticKITTI"

    ckpt = run / "ckpt" / "checkpoint_epoch_2.pth"
    _tool("test")(["--cfg_file", str(CFG), "--data_path", str(root), "--ckpt", str(ckpt), "--workers", "0",
                   "--output_root", str(out), "--no_progress", "--set", *common, "DATA_CONFIG.DATA_SPLIT.test", "test"])
    pred_file = run / "eval" / "epoch_2" / "test" / "sequences" / "11" / "predictions" / "000000.label"
    sem, inst = label_map.read_label_file(pred_file, num_points=124668)
    assert set(np.unique(sem).tolist()) <= set(label_map.LEARNING_MAP_INV.values()) - {0}  # raw ids, never 0
    assert (inst == 0).all()
    test_metrics = json.loads((run / "eval" / "epoch_2" / "test" / "metrics.json").read_text())
    assert test_metrics["predictions_written"] == 1 and test_metrics["metrics"] == {}
