"""``make demo`` at a tiny scale: data, teacher, 4x student with and without PointDistiller, table,
CSV and PNG, every output labelled as measured on the embedded synthetic dataset."""
import csv

from pcdet import demo


def test_demo_pipeline_tiny(tmp_path, capsys):
    rows = demo.main(["--out", str(tmp_path), "--frames", "8", "--val_fraction", "0.5", "--epochs", "1",
                      "--latency_runs", "1", "--skip_stats"])
    assert [r["model"] for r in rows] == ["teacher", "student_4x", "student_4x_pointdistiller"]
    out = capsys.readouterr().out
    banner_lines = [ln for ln in out.splitlines() if ln.startswith(demo.BANNER)]
    assert banner_lines and any("results" in ln for ln in banner_lines)
    with open(tmp_path / "demo_results.csv") as f:
        table = list(csv.DictReader(f))
    assert len(table) == 3 and all(r["dataset"].startswith("embedded synthetic") for r in table)
    t, s = table[0], table[1]
    assert float(t["gmacs"]) > 3 * float(s["gmacs"]) and float(t["params_M"]) > 3 * float(s["params_M"])
    assert all(float(r["latency_ms"]) > 0 for r in table)
    assert (tmp_path / "demo_map_vs_gmacs.png").stat().st_size > 1000
    # the distilled student's run exported a student-only checkpoint
    kd_ckpts = list((tmp_path / "runs").rglob("student_epoch_1.pth"))
    assert len(kd_ckpts) == 1
