"""Synthetic dataset statistics: the derived real-label statistics and the synthetic-vs-real report."""
import json

import numpy as np
import pytest

from pcdet.datasets.synthetic import generate_dataset
from pcdet.datasets.synthetic import stats as syn_stats
from pcdet.datasets.synthetic.derive_stats import STATS_FILE, derive_stats, load_label_folder
from pcdet.datasets.synthetic.generator import FrameGenerator, count_table, load_stats


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("synstats") / "kitti"
    generate_dataset(out, 8, seed=11)
    return out


def test_committed_stats_file_is_complete():
    stats = load_stats(str(STATS_FILE))
    assert stats["n_frames"] > 0
    for cls in ("Car", "Van", "Truck", "Pedestrian", "Person_sitting", "Cyclist", "Tram", "Misc"):
        e = stats["classes"][cls]
        assert len(e["hwl_mean"]) == 3 and len(e["hwl_samples"]) > 0
        np.testing.assert_allclose(np.mean(e["hwl_samples"], axis=0), e["hwl_mean"], atol=2e-3)
        assert len(e["depth_hist"]) == len(stats["depth_edges"]) - 1
        assert len(e["angle_hist"]) == len(stats["angle_edges_deg"]) - 1
    assert stats["classes"]["DontCare"]["objects_per_frame"] > 0


def test_counts_follow_the_real_histograms():
    stats = load_stats(str(STATS_FILE))
    table = count_table(0, 2000, stats)
    from pcdet.datasets.synthetic.generator import COUNT_CLASSES

    for k, cls in enumerate(COUNT_CLASSES):
        want = stats["classes"][cls]["objects_per_frame"]
        assert table[:, k].mean() == pytest.approx(want, rel=0.1, abs=0.01), cls
    # counts of a frame do not depend on how many frames are asked for
    assert np.array_equal(count_table(0, 50, stats), table[:50])


def test_kitti_difficulty_rules():
    anno = {
        "name": np.array(["Car", "Car", "Car", "Car", "DontCare"]),
        "bbox": np.array([[0, 0, 10, 45], [0, 0, 10, 30], [0, 0, 10, 30], [0, 0, 10, 20], [0, 0, 10, 60]], float),
        "occluded": np.array([0, 1, 2, 0, -1]),
        "truncated": np.array([0.1, 0.2, 0.45, 0.0, -1]),
    }
    assert syn_stats.kitti_difficulty(anno).tolist() == [0, 1, 2, -1, -1]


def test_derive_stats_on_synthetic_labels(small_dataset):
    annos = load_label_folder(small_dataset / "training" / "label_2")
    out = derive_stats(annos)
    assert out["n_frames"] == 8
    assert out["classes"]["Car"]["total"] == sum(int((a["name"] == "Car").sum()) for a in annos)


def test_comparison_report_against_real_labels(small_dataset, real_kitti_labels_all, tmp_path, capsys):
    label_dir = real_kitti_labels_all / "training" / "label_2"
    out_json = tmp_path / "cmp.json"
    code = syn_stats.main(["--synthetic", str(small_dataset), "--real_label_dir", str(label_dir), "--json", str(out_json)])
    text = capsys.readouterr().out
    res = json.loads(out_json.read_text())
    assert code in (0, 1) and (code == 0) == res["pass"]
    assert res["synthetic_frames"] == 8 and res["real_frames"] == 7481
    for cls in ("Car", "Pedestrian", "Cyclist", "Van", "DontCare"):
        assert cls in text and cls in res["classes"]
    car = res["classes"]["Car"]
    # The committed statistics were derived from these labels.
    committed = load_stats(str(STATS_FILE))["classes"]["Car"]
    assert car["real_per_frame"] == pytest.approx(committed["objects_per_frame"], rel=1e-9)
    np.testing.assert_allclose(car["real_lwh"], np.array(committed["hwl_mean"])[[2, 1, 0]], rtol=1e-9)
    # Car sizes follow the real ones closely even on 8 frames (stratified size draws).
    assert max(car["dim_rel_err"]) < 0.05
    assert 0.0 <= car["depth_intersection"] <= 1.0
    assert res["points_in_box"]["all"]["objects"] > 0
    assert "PASS" in text or "FAIL" in text


def test_comparison_requires_labels(tmp_path):
    with pytest.raises(SystemExit):
        syn_stats.main(["--synthetic", str(tmp_path), "--real_label_dir", str(tmp_path)])


def test_generator_works_without_real_data(monkeypatch, tmp_path):
    monkeypatch.setenv("PCDET_REALDATA", str(tmp_path / "nowhere"))
    frame = FrameGenerator(5).generate(0)
    assert len(frame["points"]) > 0
