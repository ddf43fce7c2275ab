"""The benchmark harness end to end on the smoke preset: a two-row table, trained, cached, resumed."""
import csv
import os
import subprocess

import pytest

from benchmark import harness, registry
from benchmark.experiments import ExperimentError, RealData
from pcdet.datasets.kitti.kitti_dataset import KittiDataset
from pcdet.utils.paths import REPO_ROOT

TABLE = """
ID: mini_pd
TITLE: teacher and a distilled 4x student
PAPER_SOURCE: test
TASK: detection
DATASET: kitti
MEASURES: [complexity, accuracy]
NEEDS: [detector:PointPillar, kd:PointDistiller]
ROWS:
    - {NAME: teacher, MODEL: pointpillar, TEACHER: true, PAPER: {bev_map: 68.3, gflops: 34.3}}
    - {NAME: 4x PointDistiller, MODEL: pointpillar_4x, KD: pointdistiller, PAPER: {3d_map: 62.1}}
"""


def _read(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_smoke_run_fills_every_cell_caches_and_resumes(tmp_path, monkeypatch):
    (tmp_path / "mini_pd.yaml").write_text(TABLE)
    tables = {"mini_pd": registry.load_table(tmp_path / "mini_pd.yaml")}
    cache, out = tmp_path / "cache", tmp_path / "out"
    path, lines, plan = harness.run_table("mini_pd", "smoke", 1, out, "cpu", cache, tables=tables)
    rows = _read(path)
    # every metric of every row: the PAPER ones plus the measures' defaults, each measured with a source
    metrics = {"bev_map", "3d_map", "gflops", "params_m"}
    assert [r["row"] for r in rows] == ["teacher"] * 4 + ["4x PointDistiller"] * 4
    assert {r["metric"] for r in rows[:4]} == metrics and {r["metric"] for r in rows[4:]} == metrics
    for r in rows:
        assert r["measured"] != "" and r["source"], r
        for src in r["source"].split(";"):
            assert (REPO_ROOT / src).exists(), src  # relative to the repository, or absolute outside it
        assert r["dataset"].startswith("EMBEDDED SYNTHETIC") and r["preset"] == "smoke" and r["n_seeds"] == "1"
        if r["metric"] in ("bev_map", "3d_map"):  # how the training computed: recorded by the run itself
            assert r["precision"] in ("fp32", "bf16") and r["threads"] == str(os.cpu_count()), r
        else:
            assert r["precision"] == "" and r["threads"] == ""
    paper = {(r["row"], r["metric"]): r["paper"] for r in rows}
    assert paper["teacher", "gflops"] == "34.3" and paper["teacher", "params_m"] == ""  # empty, not zero
    # the student distilled from the teacher run the teacher row reports (one teacher run)
    teacher_exp = plan.row_exps["teacher"]["accuracy"][0]
    student_exp = plan.row_exps["4x PointDistiller"]["accuracy"][0]
    assert student_exp.teacher is teacher_exp and student_exp.spec["teacher"] == teacher_exp.hash

    # a second run trains nothing: every experiment is cached
    def no_training(*a, **k):
        raise AssertionError(f"cached experiment was run again: {a}")

    monkeypatch.setattr(subprocess, "run", no_training)
    path2, _, plan2 = harness.run_table("mini_pd", "smoke", 1, out, "cpu", cache, tables=tables)
    assert _read(path2) == rows and all(e.cached() for e in plan2.experiments())
    monkeypatch.undo()

    # an interrupted training resumes from its newest checkpoint instead of starting over
    student_exp.result_file.unlink()
    path3, _, _ = harness.run_table("mini_pd", "smoke", 1, out, "cpu", cache, tables=tables)
    log = (student_exp.dir / "train.log").read_text()
    assert "resumed from" in log and [r["measured"] for r in _read(path3)] == [r["measured"] for r in rows]


def test_paper_preset_refuses_to_start_without_the_dataset(tmp_path, monkeypatch):
    with pytest.raises(ExperimentError, match=r"real KITTI dataset at .*missing"):
        RealData(tmp_path / "kitti", KittiDataset).check()
    import pcdet.datasets.dataset as ds

    monkeypatch.setattr(ds, "resolve_data_path", lambda p: tmp_path / "no_kitti_here")
    with pytest.raises(SystemExit, match="paper preset needs the real KITTI dataset"):
        harness.run_table("pd_t5", "paper", 1, tmp_path / "out", "cpu", tmp_path / "cache")


def test_unrunnable_table_says_what_it_waits_for(tmp_path):
    with pytest.raises(SystemExit, match=r"pvd_t4 is not runnable yet; it waits for: .*segmentation:Cylinder3D"):
        harness.run_table("pvd_t4", "mini", 1, tmp_path / "out", "cpu", tmp_path / "cache")
