"""``tools/visualize.py``: bird's-eye views of real KITTI frames (read-only; infos kept elsewhere)
with ground truth and two models' predictions read from ``result.pkl`` files."""
import pickle
import sys

import numpy as np
import pytest
from PIL import Image

from pcdet.datasets import build_dataloader
from pcdet.datasets.kitti.kitti_dataset import create_kitti_infos
from pcdet.train_utils.experiment import apply_data_overrides, load_experiment_cfg
from pcdet.utils.bev_plot import dataset_frames, load_predictions
from pcdet.utils.paths import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "tools"))
import visualize  # noqa: E402

CFG = REPO_ROOT / "tools" / "cfgs" / "kitti_models" / "pointpillar.yaml"


@pytest.fixture(scope="module")
def kitti_infos(tmp_path_factory):
    from tests.helpers import require_realdata as _require

    real = _require("kitti")
    infos = tmp_path_factory.mktemp("vis_infos")
    cfg = load_experiment_cfg(CFG)
    create_kitti_infos(cfg.DATA_CONFIG, cfg.CLASS_NAMES, real, save_path=infos, workers=0)
    return real, infos


def _preds(frames, shift):
    """Prediction annos in the result.pkl layout: the ground-truth boxes moved ``shift`` metres."""
    annos = []
    for fid, _, boxes, names in frames:
        moved = boxes.copy()
        moved[:, 1] += shift
        annos.append({"frame_id": fid, "boxes_lidar": moved, "name": names, "score": np.full(len(names), 0.9)})
    return annos


def test_visualize_draws_frames_by_models(kitti_infos, tmp_path):
    real, infos = kitti_infos
    cfg = apply_data_overrides(load_experiment_cfg(CFG), str(real), str(infos))
    dataset, _, _ = build_dataloader(cfg.DATA_CONFIG, cfg.CLASS_NAMES, 1, False, workers=0, training=False)
    frames = dataset_frames(dataset, ["000001", "000004"])
    assert [f[0] for f in frames] == ["000001", "000004"] and all(len(f[2]) > 0 for f in frames)
    paths = {}
    for name, shift in (("teacher", 0.0), ("student", 1.5)):
        paths[name] = tmp_path / f"{name}.pkl"
        with open(paths[name], "wb") as f:
            pickle.dump(_preds(frames, shift), f)
    assert set(load_predictions(paths["teacher"])) == {"000001", "000004"}
    out = tmp_path / "bev.png"
    visualize.main(["--cfg_file", str(CFG), "--data_path", str(real), "--infos_dir", str(infos),
                    "--frame_ids", "000001,000004", "--pred", f"teacher={paths['teacher']}",
                    "--pred", f"student={paths['student']}", "--out", str(out)])
    with Image.open(out) as im:  # 2 columns (models) x 2 rows (frames) of 4.2 x 4.0 inch panels
        w, h = im.size
        rgb = np.asarray(im.convert("RGB")).astype(int)
    assert 0.95 < w / h < 1.2
    red = (rgb[..., 0] > 180) & (rgb[..., 1] < 90) & (rgb[..., 2] < 90)  # Car boxes are drawn in red
    assert red[:, : w // 2].sum() > 50 and red[:, w // 2:].sum() > 50

    gt_only = tmp_path / "gt.png"
    visualize.main(["--cfg_file", str(CFG), "--data_path", str(real), "--infos_dir", str(infos), "--frames", "1",
                    "--out", str(gt_only)])
    assert gt_only.stat().st_size > 10000


def test_visualize_errors_name_what_is_wrong(kitti_infos, tmp_path):
    real, infos = kitti_infos
    bad = tmp_path / "bad.pkl"
    with open(bad, "wb") as f:
        pickle.dump([{"frame_id": "000001", "name": np.array(["Car"])}], f)
    with pytest.raises(KeyError, match=r"anno 0 lacks \['boxes_lidar', 'score'\]"):
        load_predictions(bad)
    with pytest.raises(FileNotFoundError, match="result.pkl"):
        load_predictions(tmp_path / "missing.pkl")
    with pytest.raises(SystemExit, match="NAME=RESULT_PKL"):
        visualize.main(["--cfg_file", str(CFG), "--pred", str(bad), "--out", str(tmp_path / "x.png")])
    with pytest.raises(KeyError, match="999999"):
        visualize.main(["--cfg_file", str(CFG), "--data_path", str(real), "--infos_dir", str(infos),
                        "--frame_ids", "999999", "--out", str(tmp_path / "x.png")])
