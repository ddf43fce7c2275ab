"""The SemanticKITTI mIoU (pcdet.datasets.semantickitti.eval) on hand-derived cases, the label map,
and the command line on a predictions folder.

Hand derivation (learning classes; 0 = ignored): ground truth / prediction per point

    gt   1 1 1 1 9 9 0 0 13
    pred 1 1 9 0 9 9 1 9 13

The two points with gt 0 are dropped entirely. Class 1 (car): tp 2, fp 0 (the prediction 1 on the gt-0
point is dropped), fn 2 (one predicted 9, one predicted 0) -> IoU 2/4. Class 9 (road): tp 2, fp 1,
fn 0 -> 2/3. Class 13 (building): 1/1. The 16 other classes have neither ground truth nor
predictions: IoU 0 each. miou = (0.5 + 2/3 + 1) / 19; miou_present = (0.5 + 2/3 + 1) / 3;
acc = tp / (tp + fp) = 5 / 6; per-class acc of car = 2 / 4.
"""
import json

import numpy as np
import pytest

from pcdet.datasets.semantickitti import eval as skeval
from pcdet.datasets.semantickitti import label_map as lm

GT = np.array([1, 1, 1, 1, 9, 9, 0, 0, 13])
PRED = np.array([1, 1, 9, 0, 9, 9, 1, 9, 13])


def test_hand_derived_confusion():
    cm = skeval.ConfusionMatrix()
    cm.add(PRED, GT)
    m = skeval.miou_metrics(cm)
    assert m["iou/car"] == pytest.approx(50.0) and m["iou/road"] == pytest.approx(100 * 2 / 3)
    assert m["iou/building"] == pytest.approx(100.0) and m["iou/person"] == 0.0
    assert m["miou"] == pytest.approx(100 * (0.5 + 2 / 3 + 1) / 19)
    assert m["miou_present"] == pytest.approx(100 * (0.5 + 2 / 3 + 1) / 3)
    assert m["acc"] == pytest.approx(100 * 5 / 6) and m["acc/car"] == pytest.approx(50.0)
    assert m["points"] == 7 and len([k for k in m if k.startswith("iou/")]) == 19


def test_a_class_only_predicted_is_zero_in_both_forms():
    cm = skeval.ConfusionMatrix()
    cm.add(np.array([1, 1, 6]), np.array([1, 1, 1]))  # person predicted, never in the ground truth
    m = skeval.miou_metrics(cm)
    assert m["iou/person"] == 0.0 and m["iou/car"] == pytest.approx(100 * 2 / 3)
    assert m["miou_present"] == pytest.approx(100 * (2 / 3 + 0) / 2)  # person's union is not empty: averaged in


def test_streaming_equals_one_pass():
    a, b = skeval.ConfusionMatrix(), skeval.ConfusionMatrix()
    a.add(PRED, GT)
    b.add(PRED[:4], GT[:4])
    b.add(PRED[4:], GT[4:])
    assert np.array_equal(a.conf, b.conf)


def test_label_map_round_trips_every_raw_id_and_rejects_unknown_ones():
    assert len(lm.RAW_LABELS) == 34 and set(lm.LEARNING_MAP) == set(lm.RAW_LABELS) and len(lm.CLASS_NAMES) == 19
    assert lm.CLASS_NAMES[0] == "car" and lm.CLASS_NAMES[8] == "road" and lm.CLASS_NAMES[-1] == "traffic-sign"
    raw = np.array(sorted(lm.RAW_LABELS), dtype=np.uint32)
    learning = lm.to_learning(raw)
    back = lm.to_raw(learning)
    # raw -> learning -> raw -> learning is the identity on learning classes; the inverse is canonical
    assert np.array_equal(lm.to_learning(back), learning)
    assert np.array_equal(lm.to_raw(np.arange(20)), [lm.LEARNING_MAP_INV[c] for c in range(20)])
    assert lm.to_learning(np.array([252 | (7 << 16)]))[0] == 1  # instance bits ignored; moving-car -> car
    with pytest.raises(lm.LabelFileError, match=r"bad.label: unknown SemanticKITTI raw id\(s\) \[12\]"):
        lm.to_learning(np.array([10, 12]), "bad.label")


def _write_scans(root, seq, labels):
    for i, lab in enumerate(labels):
        lm.write_label_file(root / "sequences" / seq / "labels" / f"{i:06d}.label", lab)


def test_command_line_on_a_predictions_folder(tmp_path, capsys):
    gt_raw = lm.to_raw(GT)
    _write_scans(tmp_path / "data", "08", [gt_raw, gt_raw])
    for i in range(2):
        lm.write_label_file(tmp_path / "pred" / "sequences" / "08" / "predictions" / f"{i:06d}.label", lm.to_raw(PRED))
    out = tmp_path / "m.json"
    rc = skeval.main(["--dataset", str(tmp_path / "data"), "--predictions", str(tmp_path / "pred"), "--sequences", "08",
                      "--out", str(out)])
    assert rc == 0
    m = json.loads(out.read_text())
    assert m["miou"] == pytest.approx(100 * (0.5 + 2 / 3 + 1) / 19) and m["points"] == 14
    assert "mIoU" in capsys.readouterr().out
    # a prediction file of another length, and a missing one, are errors naming the file
    lm.write_label_file(tmp_path / "pred" / "sequences" / "08" / "predictions" / "000001.label", lm.to_raw(PRED[:5]))
    assert skeval.main(["--dataset", str(tmp_path / "data"), "--predictions", str(tmp_path / "pred")]) == 2
    assert "000001.label: 5 labels for a scan of 9 points" in capsys.readouterr().err
    (tmp_path / "pred" / "sequences" / "08" / "predictions" / "000001.label").unlink()
    assert skeval.main(["--dataset", str(tmp_path / "data"), "--predictions", str(tmp_path / "pred")]) == 2
    assert "label file not found" in capsys.readouterr().err


def test_real_scan_labels_map(realdata, tmp_path):
    root = realdata / "semantickitti" / "sequences" / "00"
    path = root / "labels" / "000000.label"
    pts = np.fromfile(root / "velodyne" / "000000.bin", dtype=np.float32)
    assert len(pts) % 4 == 0
    sem, inst = lm.read_label_file(path, num_points=len(pts) // 4)
    learning = lm.to_learning(sem, str(path))
    assert len(learning) == 124668 and learning.max() <= 19
    assert (learning == 9).sum() == (sem == 40).sum() + (sem == 60).sum()  # road + lane-marking
    truncated = lm.write_label_file(tmp_path / "000000.label", sem[:-1], inst[:-1])
    with pytest.raises(lm.LabelFileError, match="124667 labels for a scan of 124668 points"):
        lm.read_label_file(truncated, num_points=124668)
    odd = tmp_path / "odd.label"
    odd.write_bytes(b"\x00" * 7)
    with pytest.raises(lm.LabelFileError, match="not a multiple of 4"):
        lm.read_label_file(odd)
