"""KITTI evaluation (``pcdet.datasets.kitti.eval``) on tiny scenes whose APs follow by hand.

How the numbers are derived: the evaluator samples one precision curve at 41 positions, one score
threshold per position reached by the sorted TP scores (at most one threshold per TP, so ``n >= 41``
ground-truth objects are needed for a full curve). With ``n`` valid ground-truth objects of which
``k`` are found, the curve is filled at positions 0, 1, .. up to recall k/n. R40 = sum of
positions 1..40 / 40; R11 = sum of positions 0, 4, .., 40 / 11 (every fourth point of the same
curve, OpenPCDet's ``get_mAP_R11``). Hence:

* 50 of 50 found, no FP: 100 (R40) and 100 (R11).
* 40 of 80 found: positions 0..20 filled; R40 = 20/40 = 50; R11 = 6/11 (positions 0, 4, .., 20).
* 10 of 10 found: only 10 thresholds, positions 0..9 filled: R40 = 9/40, R11 = 3/11 (positions
  0, 4, 8). (The pre-2019 devkit's 11-point AP, which picks its own 11 thresholds, gives 10/11.)
* FP with higher scores than every TP lower every precision value; the running maximum from the
  right then takes the precision at full recall.
"""
import json
import math

import numpy as np
import pytest

from pcdet.datasets.kitti import eval as kitti_eval
from pcdet.utils.object3d_kitti import LabelError, format_label_line, get_label_anno

CAR = dict(dims=(3.9, 1.5, 1.6))  # (l, h, w)
PED = dict(dims=(0.8, 1.75, 0.6))
GT_BOX = (100.0, 100.0, 300.0, 200.0)  # 100 px tall: easy
FP_BOX = (600.0, 100.0, 700.0, 200.0)
GT_LOC = (0.0, 1.6, 10.0)
FP_LOC = (10.0, 1.6, 30.0)


def obj(name, bbox=GT_BOX, loc=GT_LOC, dims=CAR["dims"], ry=0.0, alpha=0.0, trunc=0.0, occ=0, score=0.0):
    return dict(name=name, bbox=bbox, loc=loc, dims=dims, ry=ry, alpha=alpha, trunc=trunc, occ=occ, score=score)


def frame(objs):
    return {
        "name": np.array([o["name"] for o in objs], dtype="<U16"),
        "truncated": np.array([o["trunc"] for o in objs], dtype=np.float64),
        "occluded": np.array([o["occ"] for o in objs], dtype=np.int64),
        "alpha": np.array([o["alpha"] for o in objs], dtype=np.float64),
        "bbox": np.array([o["bbox"] for o in objs], dtype=np.float64).reshape(-1, 4),
        "dimensions": np.array([o["dims"] for o in objs], dtype=np.float64).reshape(-1, 3),
        "location": np.array([o["loc"] for o in objs], dtype=np.float64).reshape(-1, 3),
        "rotation_y": np.array([o["ry"] for o in objs], dtype=np.float64),
        "score": np.array([o["score"] for o in objs], dtype=np.float64),
    }


def run(gt_frames, dt_frames, classes=("Car",)):
    return kitti_eval.evaluate([frame(f) for f in gt_frames], [frame(f) for f in dt_frames], list(classes))


def check(res, cls, metrics, diffs, r40, r11):
    for m in metrics:
        for d in diffs:
            assert res[f"{cls}_{m}/{d}_R40"] == pytest.approx(r40, abs=1e-9), (m, d)
            assert res[f"{cls}_{m}/{d}_R11"] == pytest.approx(r11, abs=1e-9), (m, d)


ALL_M = ("bbox", "bev", "3d", "aos")
ALL_D = ("easy", "moderate", "hard")
HALF_R40, HALF_R11 = 50.0, 600.0 / 11


def test_perfect_detections_give_100():
    gt = [[obj("Car")] for _ in range(50)]
    dt = [[obj("Car", score=0.5 + i / 100)] for i in range(50)]
    res = run(gt, dt, kitti_eval.CLASS_NAMES)
    assert len(res) == 72
    check(res, "Car", ALL_M, ALL_D, 100.0, 100.0)
    # classes without any detection are not evaluated: 0
    check(res, "Pedestrian", ALL_M, ALL_D, 0.0, 0.0)


def test_few_objects_fill_only_part_of_the_curve():
    gt = [[obj("Car")] for _ in range(10)]
    dt = [[obj("Car", score=0.9)] for _ in range(10)]
    check(run(gt, dt), "Car", ALL_M, ALL_D, 100 * 9 / 40, 100 * 3 / 11)


def test_r11_is_every_fourth_point_of_the_41_point_curve():
    """A case where R11 from the 41-point curve and the old 11-threshold AP differ.

    20 ground-truth cars, all found; TP ``i`` (0-based) has score ``0.95 - i/100``; 5 false
    positives score 0.855, between TP 9 (0.86) and TP 10 (0.85). By hand:

    * 41-point thresholds (step 1/40 is finer than the recall step 1/20): every TP gives one, so
      positions 0..19 are filled, position ``i`` at TP ``i``'s score. Precision there: 1 for
      i <= 9, (i + 1) / (i + 6) for i >= 10 (increasing to 20/25 = 0.8 at i = 19). Running maximum
      from the right: [1] * 10 + [0.8] * 10 + [0] * 21.
    * R40 = (9 * 1 + 10 * 0.8) / 40 = 17/40 = 42.5.
    * R11 = positions 0, 4, 8, 12, 16 (1, 1, 1, 0.8, 0.8), 20 .. 40 (0) -> 4.6 / 11 = 41.818...
    * (The old 11-threshold AP took TPs 0, 1, 3, .., 17, 19 and reached recall 1: (6 + 5 * 0.8) / 11
      = 10/11 = 90.9; this test fails on that definition.)

    AOS: headings equal, similarity 1 per TP, so the AOS curve equals the precision curve.
    """
    gt = [[obj("Car")] for _ in range(20)]
    dt = [[obj("Car", score=0.95 - i / 100)] for i in range(20)]
    for k in range(5):
        dt[k].append(obj("Car", bbox=FP_BOX, loc=FP_LOC, score=0.855))
    check(run(gt, dt), "Car", ALL_M, ALL_D, 100 * 17 / 40, 100 * 4.6 / 11)


def test_half_of_the_ground_truth_found():
    gt = [[obj("Car")] for _ in range(80)]
    dt = [[obj("Car", score=0.3 + i / 100)] if i < 40 else [] for i in range(80)]
    check(run(gt, dt), "Car", ALL_M, ALL_D, HALF_R40, HALF_R11)


def test_false_positives_with_higher_scores():
    gt = [[obj("Car")] for _ in range(80)]
    # every frame: the TP (score < 0.5) and a FP elsewhere with a higher score: precision 1/2 at full recall
    dt = [[obj("Car", score=0.1 + i / 200), obj("Car", bbox=FP_BOX, loc=FP_LOC, score=0.9)] for i in range(80)]
    check(run(gt, dt), "Car", ALL_M, ALL_D, 50.0, 50.0)
    # a single FP above all TPs: precision at full recall 80/81, the maximum over the curve's right part
    dt = [[obj("Car", score=0.1 + i / 200)] for i in range(80)]
    dt[7].append(obj("Car", bbox=FP_BOX, loc=FP_LOC, score=0.95))
    check(run(gt, dt), "Car", ALL_M, ALL_D, 100 * 80 / 81, 100 * 80 / 81)


def test_dontcare_region_ignores_detection_in_2d_only():
    dc_box = (550.0, 90.0, 1200.0, 230.0)  # much larger than the FP: IoU small, but FP area covered
    gt = [[obj("Car"), obj("DontCare", bbox=dc_box, loc=(-1000.0, -1000.0, -1000.0), dims=(-1.0, -1.0, -1.0),
                           ry=-10.0, alpha=-10.0, trunc=-1.0, occ=-1)] for _ in range(80)]
    dt = [[obj("Car", score=0.1 + i / 200), obj("Car", bbox=FP_BOX, loc=FP_LOC, score=0.9)] for i in range(80)]
    res = run(gt, dt)
    # 2D: the FP lies inside the DontCare box (intersection / FP area = 1 > 0.7): not counted
    check(res, "Car", ("bbox", "aos"), ALL_D, 100.0, 100.0)
    # bev / 3d use the DontCare row's 3D placeholders (far away): the FP still counts
    check(res, "Car", ("bev", "3d"), ALL_D, 50.0, 50.0)
    # only 60 % of the FP inside the DontCare box: below 0.7, a false positive again
    half_in = (640.0, 90.0, 1200.0, 230.0)
    for f in gt:
        f[1]["bbox"] = half_in
    check(run(gt, dt), "Car", ("bbox",), ALL_D, 50.0, 50.0)


@pytest.mark.parametrize("gt_name,det_name,dims,expected", [
    ("Van", "Car", CAR["dims"], 100.0),  # neighbouring class: neither TP nor FP
    ("Truck", "Car", CAR["dims"], 50.0),  # unrelated class: the detection is a FP
    ("Person_sitting", "Pedestrian", PED["dims"], 100.0),
    ("Cyclist", "Pedestrian", PED["dims"], 50.0),
])
def test_neighbouring_classes_are_ignored(gt_name, det_name, dims, expected):
    other = dict(bbox=FP_BOX, loc=FP_LOC, dims=dims)
    gt = [[obj(det_name, dims=dims), obj(gt_name, **other)] for _ in range(80)]
    dt = [[obj(det_name, dims=dims, score=0.1 + i / 200), obj(det_name, score=0.9, **other)] for i in range(80)]
    check(run(gt, dt, (det_name,)), det_name, ("bbox", "bev", "3d"), ALL_D, expected, expected)


@pytest.mark.parametrize("props,expected", [
    # the second object of each pair is never detected; it counts only where it passes the filter
    (dict(occ=1), (100.0, HALF_R40, HALF_R40)),
    (dict(occ=2), (100.0, 100.0, HALF_R40)),
    (dict(trunc=0.2), (100.0, HALF_R40, HALF_R40)),
    (dict(trunc=0.4), (100.0, 100.0, HALF_R40)),
    (dict(trunc=0.6), (100.0, 100.0, 100.0)),
    (dict(bbox=(400.0, 100.0, 500.0, 130.0)), (100.0, HALF_R40, HALF_R40)),  # 30 px tall
    (dict(bbox=(400.0, 100.0, 500.0, 125.0)), (100.0, 100.0, 100.0)),  # 25 px: not taller than 25
])
def test_difficulty_filters(props, expected):
    gt = [[obj("Car")] for _ in range(50)] + [[obj("Car", **{"bbox": FP_BOX, "loc": FP_LOC, **props})]
                                              for _ in range(50)]
    dt = [[obj("Car", score=0.3 + i / 100)] for i in range(50)] + [[] for _ in range(50)]
    res = run(gt, dt)
    for d, e in zip(ALL_D, expected):
        check(res, "Car", ALL_M, (d,), e, 100.0 if e == 100.0 else HALF_R11)


def test_too_small_detections_are_ignored():
    gt = [[obj("Car")] for _ in range(50)]
    small = (600.0, 100.0, 700.0, 130.9)  # 30.9 px -> 30 px: ignored in easy, a FP in moderate / hard
    dt = [[obj("Car", score=0.3 + i / 100), obj("Car", bbox=small, loc=FP_LOC, score=0.95)] for i in range(50)]
    res = run(gt, dt)
    check(res, "Car", ALL_M, ("easy",), 100.0, 100.0)
    check(res, "Car", ALL_M, ("moderate", "hard"), 50.0, 50.0)


def test_aos_with_flipped_heading():
    gt = [[obj("Car", ry=0.3, alpha=0.2)] for _ in range(50)]
    flipped = [[obj("Car", ry=0.3 + math.pi, alpha=0.2 + math.pi, score=0.5 + i / 100)] for i in range(50)]
    res = run(gt, flipped)
    check(res, "Car", ("bbox", "bev", "3d"), ALL_D, 100.0, 100.0)  # same boxes
    check(res, "Car", ("aos",), ALL_D, 0.0, 0.0)  # (1 + cos(pi)) / 2 = 0
    sideways = [[obj("Car", ry=0.3, alpha=0.2 + math.pi / 2, score=0.5 + i / 100)] for i in range(50)]
    check(run(gt, sideways), "Car", ("aos",), ALL_D, 50.0, 50.0)  # (1 + cos(pi / 2)) / 2 = 1/2
    invalid = [[obj("Car", alpha=-10.0, score=0.5)] for _ in range(50)]
    res = run(gt, invalid)
    assert all(math.isnan(res[f"Car_aos/{d}_R40"]) for d in ALL_D)  # alpha = -10: AOS not computed
    check(res, "Car", ("bbox",), ALL_D, 100.0, 100.0)


def test_empty_frames():
    res = run([[] for _ in range(3)], [[] for _ in range(3)], kitti_eval.CLASS_NAMES)
    assert len(res) == 72 and all(v == 0.0 for v in res.values())
    # frames without ground truth but with detections: only FP
    res = run([[] for _ in range(3)], [[obj("Car", score=0.5)] for _ in range(3)])
    check(res, "Car", ALL_M, ALL_D, 0.0, 0.0)
    # mixing frames without detections / without ground truth with perfect ones
    gt = [[obj("Car")] for _ in range(50)] + [[] for _ in range(5)]
    dt = [[obj("Car", score=0.5)] for _ in range(45)] + [[] for _ in range(10)]
    res = run(gt, dt)
    assert 0.0 < res["Car_3d/moderate_R40"] < 100.0


def _write(folder, i, lines):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / ("%06d.txt" % i)).write_text("".join(ln + "\n" for ln in lines))


def test_command_line(tmp_path, capsys):
    labels, results = tmp_path / "label_2", tmp_path / "results"
    for i in range(3):
        _write(labels, i, [format_label_line("Car", 0.0, 0, 0.1, GT_BOX, (1.5, 1.6, 3.9), GT_LOC, 0.1),
                           format_label_line("Pedestrian", 0.0, 0, 0.0, FP_BOX, (1.75, 0.6, 0.8), FP_LOC, 0.0)])
        _write(results, i, [format_label_line("Car", 0.0, 0, 0.1, GT_BOX, (1.5, 1.6, 3.9), GT_LOC, 0.1, 0.8)])
    out = tmp_path / "m.json"
    rc = kitti_eval.main(["--label_dir", str(labels), "--result_dir", str(results), "--ids", "0-2",
                          "--out", str(out)])
    assert rc == 0
    data = json.loads(out.read_text())
    assert len(data) == 72
    # 3 of 3 cars found: only 3 thresholds, positions 0..2 -> R40 = 2/40, R11 = 1/11 (position 0)
    assert data["Car_3d/easy_R40"] == pytest.approx(5.0, abs=1e-6)
    assert data["Car_3d/easy_R11"] == pytest.approx(100 / 11, abs=1e-4)
    assert "Car AP_R40" in capsys.readouterr().out

    split = tmp_path / "val.txt"
    split.write_text("0\n1\n2\n3\n")
    rc = kitti_eval.main(["--label_dir", str(labels), "--result_dir", str(results), "--split_file", str(split)])
    assert rc == 2 and "000003.txt" in capsys.readouterr().err  # missing label file is named
    _write(labels, 3, [])
    rc = kitti_eval.main(["--label_dir", str(labels), "--result_dir", str(results), "--split_file", str(split)])
    assert rc == 2 and "000003.txt" in capsys.readouterr().err  # missing result file, as the devkit
    rc = kitti_eval.main(["--label_dir", str(labels), "--result_dir", str(results), "--split_file", str(split),
                          "--allow_missing_results"])
    assert rc == 0
    (results / "000001.txt").write_text("Car 0 0 0 1 2 3\n")
    with pytest.raises(LabelError, match=r"000001.txt:1"):
        kitti_eval.load_annos(labels, results, [0, 1])


def test_ground_truth_against_itself_is_100(real_kitti_labels_all):
    label_dir = real_kitti_labels_all / "training" / "label_2"
    ids = range(len(list(label_dir.glob("*.txt"))))
    gt = [get_label_anno(label_dir / ("%06d.txt" % i), allow_score=False) for i in ids]
    dt = []
    for anno in gt:
        keep = anno["name"] != "DontCare"
        det = {k: v[keep] for k, v in anno.items()}
        det["score"] = np.ones(int(keep.sum()))
        dt.append(det)
    res = kitti_eval.evaluate(gt, dt, kitti_eval.CLASS_NAMES)
    assert len(res) == 72
    bad = {k: v for k, v in res.items() if abs(v - 100.0) > 1e-9}
    assert not bad
