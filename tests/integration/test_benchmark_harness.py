"""The benchmark harness end to end on the smoke preset: a two-row table, trained, cached, resumed."""
import csv
import json
import os
import shutil
import subprocess

import pytest

from benchmark import harness, registry
from benchmark.experiments import ExperimentError, RealData
from pcdet.datasets.kitti.kitti_dataset import KittiDataset
from pcdet.utils.paths import REPO_ROOT

#: test tables (detection, embedded KITTI layout): ID -> (TITLE, MEASURES, NEEDS, ROWS)
TABLES = {
    "mini_pd": ("teacher and a distilled 4x student", "[complexity, accuracy]",
                "[detector:PointPillar, kd:PointDistiller]",
                ["{NAME: teacher, MODEL: pointpillar, TEACHER: true, PAPER: {bev_map: 68.3, gflops: 34.3}}",
                 "{NAME: 4x PointDistiller, MODEL: pointpillar_4x, KD: pointdistiller, PAPER: {3d_map: 62.1}}"]),
    "smoke_teacher": ("the smoke preset's PointPillars teacher alone", "[accuracy]", "[detector:PointPillar]",
                      ["{NAME: teacher, MODEL: pointpillar, TEACHER: true}"]),
    "tiny_waiting": ("a row whose method does not exist", "[accuracy]", "[detector:PointPillar]",
                     ["{NAME: unknown KD, MODEL: pointpillar_4x, KD: no_such_method, NEEDS: [kd:NoSuchMethod], "
                      "PAPER: {bev_map: 1.0}}"]),
    "tiny_paired": ("teacher, no KD and PointDistiller, seed-paired", "[accuracy]",
                    "[detector:PointPillar, kd:PointDistiller]",
                    ["{NAME: teacher, MODEL: pointpillar, TEACHER: true, METRICS: [bev_car_moderate]}",
                     "{NAME: no KD, MODEL: pointpillar_4x, PAPER: {bev_map: 66.4}}",
                     "{NAME: PointDistiller, MODEL: pointpillar_4x, KD: pointdistiller, PAPER: {bev_map: 69.2}}"]),
}


def _tables(folder, table_id):
    """``{table_id: table}``: the test table written to ``folder`` as a table YAML file and loaded from it
    as the registry loads ``benchmark/tables/``."""
    title, measures, needs, rows = TABLES[table_id]
    lines = [f"ID: {table_id}", f"TITLE: {title}", "PAPER_SOURCE: test", "TASK: detection", "DATASET: kitti",
             f"MEASURES: {measures}", f"NEEDS: {needs}", "ROWS:"] + [f"    - {row}" for row in rows]
    path = folder / f"{table_id}.yaml"
    path.write_text("\n".join(lines) + "\n")
    return {table_id: registry.load_table(path)}


def _read(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def teacher_cache(tmp_path_factory):
    """A cache holding the smoke preset's embedded dataset and its 1-epoch PointPillars teacher, built
    once for this module (the teacher every detection table here distils from: same spec, same hash)."""
    root = tmp_path_factory.mktemp("teacher_cache")
    tables = _tables(root, "smoke_teacher")
    _, _, plan = harness.run_table("smoke_teacher", "smoke", 1, root / "out", "cpu", root / "cache", tables=tables)
    teacher = plan.row_exps["teacher"]["accuracy"][0]
    assert teacher.label == "teacher_pointpillar" and teacher.cached()
    return root / "cache", teacher.hash


def _seeded(teacher_cache, path):
    """A copy of the module's teacher cache at ``path`` (each test owns its cache)."""
    shutil.copytree(teacher_cache[0], path)
    return path


def test_smoke_run_fills_every_cell_caches_and_resumes(tmp_path, monkeypatch, teacher_cache):
    tables = _tables(tmp_path, "mini_pd")
    cache, out = _seeded(teacher_cache, tmp_path / "cache"), tmp_path / "out"
    path, lines, plan = harness.run_table("mini_pd", "smoke", 1, out, "cpu", cache, tables=tables)
    rows = _read(path)
    # every metric of every row: the PAPER ones plus the measures' defaults, each measured with a source
    metrics = {"bev_map", "3d_map", "gflops", "gflops_dense", "gflops_sparse", "params_m"}
    assert [r["row"] for r in rows] == ["teacher"] * 6 + ["4x PointDistiller"] * 6
    assert {r["metric"] for r in rows[:6]} == metrics and {r["metric"] for r in rows[6:]} == metrics
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
    assert teacher_exp.hash == teacher_cache[1]  # the module's cached teacher, not a new one

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


def test_slurm_launcher_fills_the_local_runs_cells_of_pd_app_t3(tmp_path, teacher_cache):
    """``pd_app_t3 --preset smoke --launcher slurm`` through submitit's local executor (jobs as
    subprocesses, no scheduler) fills exactly the cells of ``--launcher local``: the teacher and the
    1+1+1 PointDistiller row (``--rows``, to keep the suite short: the whole table takes about 80 s local
    and 120 s through the executor on 2 cores), each experiment the cache lacks a job of its own. Both
    caches start from the module's teacher (its training through a job is the students' code path)."""
    pytest.importorskip("submitit", reason="submitit is not installed (requirements.txt installs it)")
    rows = r"Teacher|1\+1\+1=3, PointDistiller"
    local, _, _ = harness.run_table("pd_app_t3", "smoke", 1, tmp_path / "out_local", "cpu",
                                    _seeded(teacher_cache, tmp_path / "cache_local"), rows=rows)
    cache = _seeded(teacher_cache, tmp_path / "cache_slurm")
    slurm, _, plan = harness.run_table("pd_app_t3", "smoke", 1, tmp_path / "out_slurm", "cpu", cache, rows=rows,
                                       launcher="slurm", slurm={"cluster": "local", "cpus_per_training": os.cpu_count()})
    cells = [(r["row"], r["metric"], r["measured"]) for r in _read(local)]
    assert [(r["row"], r["metric"], r["measured"]) for r in _read(slurm)] == cells
    measured = {row for row, _, value in cells if value != ""}
    assert measured == {"3+5+5=13 (Teacher)", "1+1+1=3, PointDistiller"}
    jobs = [p for p in (cache / "submitit").iterdir() if p.name.isdigit()]
    exps = plan.experiments()
    assert [e.hash for e in exps if e.label.startswith("teacher")] == [teacher_cache[1]]
    assert len(jobs) == len(exps) - 1 == 3 and all(e.cached() for e in exps)  # the student, two complexities


def test_paper_preset_refuses_to_start_without_the_dataset(tmp_path, monkeypatch):
    with pytest.raises(ExperimentError, match=r"real KITTI dataset at .*missing"):
        RealData(tmp_path / "kitti", KittiDataset).check()
    import pcdet.datasets.dataset as ds

    monkeypatch.setattr(ds, "resolve_data_path", lambda p: tmp_path / "no_kitti_here")
    with pytest.raises(SystemExit, match="paper preset needs the real KITTI dataset"):
        harness.run_table("pd_t5", "paper", 1, tmp_path / "out", "cpu", tmp_path / "cache")


def test_unrunnable_table_says_what_it_waits_for(tmp_path):
    tables = _tables(tmp_path, "tiny_waiting")
    with pytest.raises(SystemExit, match=r"tiny_waiting is not runnable yet; it waits for: .*kd:NoSuchMethod"):
        harness.run_table("tiny_waiting", "mini", 1, tmp_path / "out", "cpu", tmp_path / "cache", tables=tables)
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()


def test_paired_design_scores_last_epochs_gates_the_teacher_and_keeps_per_seed_values(tmp_path, monkeypatch,
                                                                                         teacher_cache):
    """The paired preset's machinery at toy size: students seed by seed, the teacher gate checked before
    the KD students, scores = mean of the last 2 evaluations, per-seed values in the CSV, KD diagnostics.
    The teacher comes from the module's cache (the teacher of smoke with TEACHER_EPOCHS 1: same hash)."""
    tables = _tables(tmp_path, "tiny_paired")
    presets = registry.load_presets()
    presets["tiny_paired"] = dict(presets["smoke"], EPOCHS=2, TEACHER_EPOCHS=1, SEEDS=2, JOBS=1, EVAL_LAST=2,
                                  GATE={"MIN_GAP": 5.0}, KD_DIAGNOSTICS=1, ORDER="seed")
    monkeypatch.setattr(registry, "load_presets", lambda *a, **k: presets)
    started = []
    real_start = harness._log
    monkeypatch.setattr(harness, "_log", lambda msg: (started.append(msg), real_start(msg)))
    path, lines, plan = harness.run_table("tiny_paired", "tiny_paired", None, tmp_path / "out", "cpu",
                                          _seeded(teacher_cache, tmp_path / "cache"), tables=tables)
    events = [m.split()[2] if m.startswith("running train") else "GATE" for m in started
              if m.startswith("running train") or m.startswith("teacher gate")]
    # (the teacher is cached) the gate's no-KD student (seed 0), the gate, then the rest seed by seed
    assert plan.experiments()[0].hash == teacher_cache[1]
    assert events == ["pointpillar_4x", "GATE", "pointpillar_4x_pointdistiller",
                      "pointpillar_4x", "pointpillar_4x_pointdistiller"]
    order = [(e.label, e.seed) for e in plan.experiments()]
    assert order[1:] == [("pointpillar_4x", 0), ("pointpillar_4x_pointdistiller", 0), ("pointpillar_4x", 1),
                         ("pointpillar_4x_pointdistiller", 1)]
    gate = json.loads((tmp_path / "cache" / "gates" / "tiny_paired_tiny_paired.json").read_text())
    assert len(gate["rows"]) == 6 and {r["metric"] for r in gate["rows"]} >= {"bev_car_moderate", "3d_cyc_moderate"}
    assert any("teacher gate" in m for m in started)
    rows = _read(path)
    line = next(r for r in rows if r["row"] == "no KD" and r["metric"] == "bev_map")
    assert line["seeds"] == "0;1" and len(line["values"].split(";")) == 2
    assert float(line["measured"]) == pytest.approx(sum(map(float, line["values"].split(";"))) / 2, abs=1e-3)
    exp = plan.row_exps["no KD"]["accuracy"][0]
    res = exp.result()
    assert sorted(res["metrics_by_epoch"], key=int) == ["1", "2"]  # the last 2 epochs were evaluated
    by_epoch = [plan.evaluator_cls.metric_value(res["metrics_by_epoch"][e], "bev_map") for e in ("1", "2")]
    assert float(line["values"].split(";")[0]) == pytest.approx(sum(by_epoch) / 2, abs=1e-3)
    kd_run = plan.row_exps["PointDistiller"]["accuracy"][0].run_dir
    diag = json.loads((kd_run / "train_stats.json").read_text())["kd_diagnostics"]
    assert diag and any(k.endswith("/cka") for k in diag[0]) and any(k.endswith("/grad_ratio") for k in diag[0])


def test_segmentation_table_runs_teacher_student_and_pvd_and_keeps_paper_references(tmp_path):
    """pvd_t1 under smoke, cut to four rows (the suite's time): the Cylinder3D teacher, the 0.5x student
    and the student distilled with PVD train on embedded SemanticKITTI and fill their mIoU / per-class
    IoU / latency cells; another architecture stays a paper reference."""
    import csv

    table = registry.load_tables()["pvd_t1"]
    keep = ("Cylinder3D [37] *", "C3D_0.5x", "C3D_0.5x + PVD", "KPConv [26]")
    table = dict(table, ROWS=[r for r in table["ROWS"] if r["NAME"] in keep])
    path, lines, plan = harness.run_table("pvd_t1", "smoke", 1, tmp_path / "out", "cpu", tmp_path / "cache",
                                          tables={"pvd_t1": table})
    assert plan.runnable == ["Cylinder3D [37] *", "C3D_0.5x", "C3D_0.5x + PVD"]
    with open(path) as f:
        cells = {(r["row"], r["metric"]): r for r in csv.DictReader(f)}
    for row in plan.runnable:
        for metric in ("miou", "miou_present", "iou_car", "iou_traffic_sign", "latency_ms"):
            c = cells[(row, metric)]
            assert c["measured"] != "" and c["source"], (row, metric)
        assert "front 90 deg crop" in cells[(row, "miou")]["dataset"]
        assert cells[(row, "miou")]["dataset"].startswith("EMBEDDED SYNTHETIC")
    ref = cells[("KPConv [26]", "miou")]
    assert ref["paper"] == "58.8" and ref["measured"] == "" and ref["source"].startswith("paper reference:")
    kd_run = plan.row_exps["C3D_0.5x + PVD"]["accuracy"][0].run_dir
    log = next(kd_run.glob("train_*.log")).read_text()
    assert "kd_cfgs/synthetic_seg/cylinder3d_0.5x_pvd.yaml" in log  # trained by the KD config, not the bare student


def test_dry_run_says_what_would_run_resume_or_come_from_the_cache(tmp_path, monkeypatch, capsys):
    """``--dry_run`` trains nothing and writes no CSV; each experiment's state follows its cache folder:
    a result file (cached), checkpoints without one (resumes after the newest), neither (to run)."""
    tables = _tables(tmp_path, "tiny_paired")
    presets = registry.load_presets()
    presets["tiny_dry"] = dict(presets["smoke"], EPOCHS=3, TEACHER_EPOCHS=1, SEEDS=2, JOBS=1)
    monkeypatch.setattr(registry, "load_presets", lambda *a, **k: presets)
    args = ("tiny_paired", "tiny_dry", None, tmp_path / "out", "cpu", tmp_path / "cache")
    path, lines, plan = harness.run_table(*args, tables=tables, dry_run=True)
    exps = plan.experiments()
    assert path is None and not (tmp_path / "out").exists()
    assert not list((tmp_path / "cache").glob("train/*/result.json"))
    assert len(lines) == len(exps) + 1 and all(" to run " in line for line in lines[:-1])
    assert lines[-1].endswith(f"{len(exps)} experiments, 0 cached, {len(exps)} to run or resume; "
                              f"{1 + 4 * 3} training epochs left")  # teacher 1 + 2 rows x 2 seeds x 3
    teacher = next(e for e in exps if e.label.startswith("teacher"))
    student = next(e for e in exps if e.label == "pointpillar_4x" and e.seed == 1)
    teacher.dir.mkdir(parents=True)
    teacher.result_file.write_text("{}\n")
    (student.run_dir / "ckpt").mkdir(parents=True)
    for n in (1, 2):
        (student.run_dir / "ckpt" / f"checkpoint_epoch_{n}.pth").write_bytes(b"")
    _, lines, _ = harness.run_table(*args, tables=tables, dry_run=True)
    assert harness.experiment_status(teacher) == ("cached", 0)
    assert harness.experiment_status(student) == ("resumes after epoch 2 of 3", 2)
    assert lines[-1].endswith(f"{len(exps) - 1} to run or resume; {4 * 3 - 2} training epochs left")
    assert "resumes after epoch 2 of 3" in capsys.readouterr().out


def test_run_records_carry_a_table_to_a_fresh_cache(tmp_path, monkeypatch, teacher_cache):
    """``records``: the first run records its trainings (the teacher cached before ``--records`` too);
    a run on an empty cache (another machine) with the same records trains nothing and writes the same
    measured values, the CSV naming the records; a student without a record makes the record-only
    teacher train again first, and the student's record names the weights it distilled from."""
    tables = _tables(tmp_path, "tiny_paired")
    store, out = tmp_path / "records", tmp_path / "out"
    path, _, plan = harness.run_table("tiny_paired", "smoke", 1, out, "cpu", _seeded(teacher_cache, tmp_path / "a"),
                                      tables=tables, records=store)
    rows = _read(path)
    files = sorted(p.name for p in (store / "train").glob("*.json"))
    assert len(files) == 3 and any(f.startswith("teacher_pointpillar-") for f in files)
    teacher = plan.row_exps["teacher"]["accuracy"][0]
    student = plan.row_exps["PointDistiller"]["accuracy"][0]
    saved = json.loads((store / "train" / f"{student.label}-{student.hash}.json").read_text())["result"]
    assert saved["teacher_weights_sha1"] == json.loads(
        (store / "train" / f"{teacher.label}-{teacher.hash}.json").read_text())["result"]["weights_sha1"]

    def no_training(*a, **k):
        raise AssertionError(f"a recorded training was run again: {a}")

    monkeypatch.setattr(subprocess, "run", no_training)
    path2, _, plan2 = harness.run_table("tiny_paired", "smoke", 1, out, "cpu", tmp_path / "b", tables=tables,
                                        records=store)
    monkeypatch.undo()
    rows2 = _read(path2)
    assert [r["measured"] for r in rows2] == [r["measured"] for r in rows]
    assert all(r["source"].startswith(str(store / "train")) for r in rows2 if r["measured"])
    assert not list((tmp_path / "b").glob("train/*/result.json"))  # nothing trained there

    (store / "train" / f"{student.label}-{student.hash}.json").unlink()
    harness.run_table("tiny_paired", "smoke", 1, out, "cpu", tmp_path / "c", tables=tables, records=store)
    assert (tmp_path / "c" / "train" / f"{teacher.label}-{teacher.hash}" / "result.json").is_file()  # again
    again = json.loads((store / "train" / f"{student.label}-{student.hash}.json").read_text())["result"]
    assert again["teacher_weights_sha1"] and again["metrics"]
