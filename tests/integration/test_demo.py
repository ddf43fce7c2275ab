"""``make demo`` at a tiny scale: data, teacher, 4x student with and without PointDistiller, table,
CSV and PNGs (mAP vs GMACs, bird's-eye views), every output labelled as measured on the embedded
synthetic dataset; trainings show live progress and keep readable logs that name the precision."""
import csv

from benchmark import demo


def test_demo_pipeline_tiny(tmp_path, capsys):
    rows = demo.main(["--out", str(tmp_path), "--frames", "8", "--val_fraction", "0.5", "--epochs", "1",
                      "--latency_runs", "1", "--skip_stats"])
    assert [r["model"] for r in rows] == ["teacher", "student_4x", "student_4x_pointdistiller"]
    captured = capsys.readouterr()
    out = captured.out
    banner_lines = [ln for ln in out.splitlines() if ln.startswith(demo.BANNER)]
    assert banner_lines and any("results" in ln for ln in banner_lines)
    with open(tmp_path / "demo_results.csv") as f:
        table = list(csv.DictReader(f))
    assert len(table) == 3 and all(r["dataset"].startswith("embedded synthetic") for r in table)
    t, s = table[0], table[1]
    assert float(t["gmacs"]) > 3 * float(s["gmacs"]) and float(t["params_M"]) > 3 * float(s["params_M"])
    assert all(float(r["latency_ms"]) > 0 for r in table)
    assert (tmp_path / "demo_map_vs_gmacs.png").stat().st_size > 1000
    assert all(r["precision"] in ("fp32", "bf16") and int(r["threads"]) >= 1 for r in table)
    from PIL import Image

    with Image.open(tmp_path / "demo_bev.png") as im:  # 3 model columns x 3 val frames (4.2 x 4.0 in each)
        assert 1.0 < im.size[0] / im.size[1] < 1.2 and im.size[0] > 1200
    # live progress reached the terminal (stderr, redrawn with carriage returns); the log keeps the
    # last state of each bar and the precision the run chose
    assert "epochs: 100%" in captured.err and "\r" in captured.err
    log = (tmp_path / "logs" / "teacher.log").read_text()
    assert "precision: " in log and "epochs: 100%" in log and "\r" not in log
    # the distilled student's run exported a student-only checkpoint
    kd_ckpts = list((tmp_path / "runs").rglob("student_epoch_1.pth"))
    assert len(kd_ckpts) == 1


def test_segmentation_demo_tiny(tmp_path, capsys):
    """``make demo TASK=segmentation`` at a tiny scale: embedded SemanticKITTI, the Cylinder3D teacher
    and 0.5x student, a table with params / MACs / latency / mIoU, the CSV and the coloured picture."""
    from benchmark import demo_segmentation

    rows = demo_segmentation.main(["--out", str(tmp_path), "--frames", "6", "--val_fraction", "0.5", "--epochs", "1",
                                   "--latency_runs", "1", "--skip_stats", "--no_progress"])
    assert [r["model"] for r in rows] == ["teacher", "student_0.5x"]
    out = capsys.readouterr().out
    assert "student / teacher: latency" in out and "MACs" in out
    with open(tmp_path / "demo_segmentation_results.csv") as f:
        table = list(csv.DictReader(f))
    t, s = table
    assert float(t["params_M"]) > 3 * float(s["params_M"]) and float(t["gmacs"]) > float(s["gmacs"])
    assert all(r["dataset"].startswith("EMBEDDED SYNTHETIC") and "front 90 deg crop" in r["dataset"] for r in table)
    assert all(0 <= float(r["miou"]) <= float(r["miou_present"]) + 1e-6 for r in table)
    assert "iou/traffic-sign" in t and int(t["frame_points"]) > 10000
    from PIL import Image

    with Image.open(tmp_path / "demo_segmentation_bev.png") as im:  # three panels side by side
        assert im.size[0] > 2.5 * im.size[1]
