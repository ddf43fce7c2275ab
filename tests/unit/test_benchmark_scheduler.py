"""The harness's training scheduler and thread assignment, with no training and no timing.

Fake experiments run through an injected runner whose ``wait`` finishes the running trainings in a
scripted order, so every interleaving is reproduced exactly (no sleeps, no threads). What is
checked: exclusive trainings (teachers) run alone and first, at most ``jobs`` others at once, a
student only after its teacher, a failure stops new starts, and the thread count of every training
is fixed by the plan whatever the completion order.
"""
import concurrent.futures
import itertools

import pytest

from benchmark import harness
from benchmark.experiments import ExperimentError


class FakeTrain:
    """``cached``: finished in this cache; ``recorded``: known from a run record only (no checkpoint here)."""

    def __init__(self, name, teacher=None, fail=False, cached=False, exclusive=False, threads=None, recorded=False):
        self.label, self.dir, self.teacher, self.fail, self._cached = name, name, teacher, fail, cached
        self.exclusive, self.threads, self._recorded, self.rerun_locally = exclusive, threads, recorded, False

    def local(self):
        return self._cached

    def cached(self):
        return self._cached or (self._recorded and not self.rerun_locally)


class ScriptedRunner:
    """``submit`` records a start; ``wait`` finishes one running training, chosen by ``pick``
    (a function of the running labels in start order), and records everything in ``events``."""

    def __init__(self, pick=lambda running: running[0]):
        self.pick, self.events, self.running, self.peak = pick, [], [], 0

    def submit(self, e):
        f = concurrent.futures.Future()
        f.exp = e
        self.running.append(f)
        self.events.append(("start", e.label, tuple(r.exp.label for r in self.running)))
        self.peak = max(self.peak, len(self.running))
        return f

    def wait(self, futures):
        assert set(futures) == set(self.running)
        label = self.pick([f.exp.label for f in self.running])
        f = next(x for x in self.running if x.exp.label == label)
        self.running.remove(f)
        self.events.append(("end", label))
        if f.exp.fail:
            f.set_exception(ExperimentError(f"{label} failed"))
        else:
            f.set_result({})
        return [f]

    def started(self):
        return [ev[1] for ev in self.events if ev[0] == "start"]

    def beside(self, label):
        """The trainings running when ``label`` started (itself included)."""
        return next(ev[2] for ev in self.events if ev[0] == "start" and ev[1] == label)


def _run(trainings, jobs, runner):
    done = []
    harness.schedule_trainings(trainings, jobs, start=lambda e: None, done=lambda e: done.append(e.label),
                               runner=runner)
    return done


def _plan():
    teacher = FakeTrain("teacher", exclusive=True)
    return [teacher, FakeTrain("nokd0"), FakeTrain("nokd1"), FakeTrain("kd0", teacher), FakeTrain("kd1", teacher),
            FakeTrain("kd2", teacher)]


def test_students_wait_for_their_teacher_and_jobs_bound_concurrency():
    runner = ScriptedRunner()
    done = _run(_plan(), 2, runner)
    assert sorted(done) == sorted(e.label for e in _plan())
    assert runner.peak == 2
    assert runner.started()[0] == "teacher" and runner.beside("teacher") == ("teacher",)  # alone, first
    ev = runner.events
    for kd in ("kd0", "kd1", "kd2"):
        assert ev.index(next(x for x in ev if x[:2] == ("start", kd))) > ev.index(("end", "teacher"))


@pytest.mark.parametrize("order", ["fifo", "lifo"])
def test_exclusive_trainings_never_share_the_machine(order):
    teacher = FakeTrain("teacher", exclusive=True)
    timed = FakeTrain("kd_1epoch", teacher, exclusive=True)
    exps = [teacher, FakeTrain("nokd0"), FakeTrain("kd0", teacher), timed, FakeTrain("nokd1")]
    runner = ScriptedRunner(pick=(lambda r: r[0]) if order == "fifo" else (lambda r: r[-1]))
    _run(exps, 2, runner)
    assert runner.started()[:2] == ["teacher", "kd_1epoch"]  # exclusive ones first, in plan order
    assert runner.beside("teacher") == ("teacher",) and runner.beside("kd_1epoch") == ("kd_1epoch",)
    assert runner.peak == 2


def test_one_job_runs_in_order():
    exps = [FakeTrain(f"r{i}") for i in range(4)]
    runner = ScriptedRunner()
    assert _run(exps, 1, runner) == ["r0", "r1", "r2", "r3"] and runner.peak == 1


def test_cached_teacher_releases_students_and_is_reported_done():
    teacher = FakeTrain("teacher", cached=True, exclusive=True)
    runner = ScriptedRunner()
    done = _run([teacher, FakeTrain("kd", teacher)], 2, runner)
    assert done == ["teacher", "kd"] and runner.started() == ["kd"]


def test_recorded_teacher_trains_again_first_when_a_student_still_needs_its_checkpoint():
    teacher = FakeTrain("teacher", recorded=True, exclusive=True)
    runner = ScriptedRunner()
    done = _run([teacher, FakeTrain("kd0", teacher, recorded=True), FakeTrain("kd1", teacher)], 2, runner)
    assert runner.started() == ["teacher", "kd1"] and runner.beside("teacher") == ("teacher",)
    assert sorted(done) == ["kd0", "kd1", "teacher"] and teacher.rerun_locally


def test_recorded_teacher_stays_recorded_when_every_student_is_recorded_or_cached():
    teacher = FakeTrain("teacher", recorded=True, exclusive=True)
    runner = ScriptedRunner()
    done = _run([teacher, FakeTrain("kd0", teacher, recorded=True), FakeTrain("kd1", teacher, cached=True)], 2, runner)
    assert runner.started() == [] and sorted(done) == ["kd0", "kd1", "teacher"] and not teacher.rerun_locally


def test_recorded_teacher_outside_the_list_joins_it_when_its_students_train():
    """The gate runs the teacher in a first pass; the students' pass still retrains a record-only teacher."""
    teacher = FakeTrain("teacher", recorded=True, exclusive=True)
    runner = ScriptedRunner()
    done = _run([FakeTrain("kd0", teacher)], 2, runner)
    assert runner.started() == ["teacher", "kd0"] and done == ["teacher", "kd0"]


def test_failure_stops_new_starts_and_raises():
    teacher = FakeTrain("teacher", fail=True, exclusive=True)
    exps = [teacher, FakeTrain("nokd0"), FakeTrain("kd0", teacher), FakeTrain("kd1", teacher)]
    runner = ScriptedRunner()
    with pytest.raises(ExperimentError, match="teacher failed"):
        _run(exps, 2, runner)
    assert runner.started() == ["teacher"]


def test_failure_lets_the_running_ones_finish():
    exps = [FakeTrain("a", fail=True), FakeTrain("b"), FakeTrain("c")]
    runner = ScriptedRunner()
    with pytest.raises(ExperimentError, match="a failed"):
        _run(exps, 2, runner)
    assert runner.started() == ["a", "b"] and ("end", "b") in runner.events


def test_threads_per_job_shares_the_cores():
    assert harness.threads_per_job(2, cores=2) == 1
    assert harness.threads_per_job(1, cores=2) == 2
    assert harness.threads_per_job(4, cores=2) == 1
    assert harness.threads_per_job(2, cores=16) == 8


def test_training_threads_is_a_function_of_the_plan():
    assert harness.training_threads(True, 2, cores=2) == 2  # exclusive: every core
    assert harness.training_threads(False, 2, cores=2) == 1
    assert harness.training_threads(False, 1, cores=2) == 2
    assert harness.training_threads(False, 3, cores=16) == 5


def test_thread_counts_do_not_depend_on_completion_order():
    """The old race: ``kd2`` got 2 threads when ``kd0`` and ``kd1`` happened to finish before it
    started. Threads now come from the plan; every completion order starts the same trainings with
    the same counts, and no training ever runs beside more than ``jobs - 1`` others."""
    seen = set()
    for perm in itertools.permutations(range(6)):
        rank = {name: k for k, name in zip(perm, ["teacher", "nokd0", "nokd1", "kd0", "kd1", "kd2"])}
        exps = _plan()
        for e in exps:
            e.threads = harness.training_threads(e.exclusive, 2, cores=2)
        runner = ScriptedRunner(pick=lambda running: min(running, key=rank.__getitem__))
        _run(exps, 2, runner)
        assert runner.peak <= 2
        seen.add(tuple(sorted((e.label, e.threads) for e in exps)))
    assert seen == {(("kd0", 1), ("kd1", 1), ("kd2", 1), ("nokd0", 1), ("nokd1", 1), ("teacher", 2))}


def test_plan_fixes_threads_in_each_training_spec(tmp_path, monkeypatch):
    """Real tables' plans under ``mini`` (pd_t5: a teacher and seeded students; pd_app_d2: timed
    epochs): the teacher and the timed epochs are exclusive with every core, the other trainings get
    ``cores // jobs``; the count is in the hashed spec, so another ``--jobs`` is another experiment."""
    from benchmark import registry
    from benchmark.experiments import SyntheticData, Train

    monkeypatch.setattr(SyntheticData, "first_val_frame", lambda self: tmp_path / "000000.bin")
    tables, preset = registry.load_tables(), registry.load_presets()["mini"]

    def trainings(table_id, jobs):
        plan = harness.TablePlan(tables[table_id], "mini", preset, range(2), "cpu", tmp_path, jobs=jobs, cores=2)
        plan.build_data()
        return [e for e in plan.build().experiments() if isinstance(e, Train)]

    t5, d2 = trainings("pd_t5", 2), trainings("pd_app_d2", 2)
    assert t5[0].label.startswith("teacher_") and t5[0].exclusive and t5[0].threads == 2
    students = [e for e in t5 if not e.exclusive]
    assert len(students) == 8 and all(e.threads == 1 and e.spec["threads"] == 1 for e in students)
    timed = [e for e in d2 if e.label.endswith("_1epoch")]
    assert len(timed) == 3 and all(e.exclusive and e.threads == 2 for e in timed)
    one = {(e.label, e.seed): e for e in trainings("pd_t5", 1)}
    for e in t5:  # exclusive ones are the same experiment for any --jobs, the others are not
        assert (e.hash == one[(e.label, e.seed)].hash) == e.exclusive


def test_cluster_trainings_take_their_threads_from_the_job_not_the_driver(tmp_path, monkeypatch):
    """``--launcher slurm``: every training (teacher or student, any ``--jobs``) gets the jobs' own CPU
    count, whatever the driver machine has; run_table refuses a count below one."""
    from benchmark import registry
    from benchmark.experiments import SyntheticData, Train

    monkeypatch.setattr(SyntheticData, "first_val_frame", lambda self: tmp_path / "000000.bin")
    tables, preset = registry.load_tables(), registry.load_presets()["mini"]
    for cores in (2, 64):
        plan = harness.TablePlan(tables["pd_t5"], "mini", preset, range(2), "cpu", tmp_path, jobs=4, cores=cores,
                                 threads_per_training=8)
        plan.build_data()
        trains = [e for e in plan.build().experiments() if isinstance(e, Train)]
        assert len(trains) == 9 and all(e.threads == 8 and e.spec["threads"] == 8 for e in trains)
    for bad in (0, -1):
        with pytest.raises(SystemExit, match="slurm_cpus_per_training"):
            harness.run_table("pd_t5", "mini", 1, tmp_path / "out", "cpu", tmp_path, launcher="slurm",
                              slurm={"cpus_per_training": bad})


def test_rows_pattern_runs_the_matching_rows_and_keeps_cached_ones(tmp_path, monkeypatch):
    """``--rows SECOND`` on pd_t1 under mini: only the SECOND rows' trainings (and their teacher) are
    planned; another row stays in the table when everything it needs is cached already."""
    from benchmark import registry
    from benchmark.experiments import SyntheticData, Train

    monkeypatch.setattr(SyntheticData, "first_val_frame", lambda self: tmp_path / "000000.bin")
    tables, preset = registry.load_tables(), registry.load_presets()["mini"]

    def plan_for(pattern):
        plan = harness.TablePlan(tables["pd_t1"], "mini", preset, range(3), "cpu", tmp_path, jobs=2, cores=2,
                                 row_pattern=pattern)
        plan.build_data()
        return plan.build()

    full, second = plan_for(None), plan_for("SECOND")
    assert second.selected == [n for n in full.row_exps if "SECOND" in n] and len(second.selected) == 5
    assert sorted(second.row_exps) == sorted(second.selected)
    trains = [e for e in second.experiments() if isinstance(e, Train)]
    assert trains and all("second" in e.label for e in trains)
    assert {e.label for e in trains} == {"teacher_second", "second_4x", "second_16x", "second_4x_pointdistiller",
                                         "second_16x_pointdistiller"}
    cached = {e.dir for e in full.row_exps["PointPillars 4x, no KD"]["accuracy"]}
    cached |= {full.row_exps["PointPillars 4x, no KD"]["complexity"].dir}
    monkeypatch.setattr(Train, "cached", lambda self: self.dir in cached)
    from benchmark.experiments import Complexity
    monkeypatch.setattr(Complexity, "cached", lambda self: self.dir in cached)
    again = plan_for("SECOND")
    assert "PointPillars 4x, no KD" in again.row_exps and "PointPillars 4x, PointDistiller" not in again.row_exps
    # a KD row alone keeps its family's teacher row (the teacher trains anyway), and the gate pairs the
    # cached PointPillars no-KD row with the PointPillars teacher, never with the SECOND one
    kd_only = plan_for("SECOND 4x, PointDistiller")
    assert sorted(kd_only.row_exps) == ["PointPillars 4x, no KD", "SECOND 4x, PointDistiller", "SECOND teacher"]
    assert kd_only.gate_reference() is None  # the PointPillars teacher is not part of this run
    assert plan_for("SECOND 4x, no KD|SECOND teacher").gate_reference()[0].label == "teacher_second"
    for bad, msg in (("(", "not a regular expression"), ("no such row", "matches no runnable row")):
        with pytest.raises(SystemExit, match=msg):
            harness.run_table("pd_t1", "mini", 1, tmp_path / "out", "cpu", tmp_path, rows=bad)


def test_seeds_by_kd_gives_the_paired_arms_more_seeds_unless_seeds_are_given(tmp_path, monkeypatch):
    """mini's SEEDS_BY_KD: on pvd_t4 the no-KD and PVD rows train seeds 0..9, the ablation rows the
    preset's 3; ``--seeds`` (seeds_given) puts every row on the seeds asked for."""
    from benchmark import registry
    from benchmark.experiments import SyntheticData, Train

    monkeypatch.setattr(SyntheticData, "first_val_frame", lambda self: tmp_path / "000000.bin")
    tables, preset = registry.load_tables(), registry.load_presets()["mini"]
    assert preset["SEEDS_BY_KD"]["synthetic_seg"] == {"none": 10, "pvd": 10}

    def seeds_per_row(given):
        n = 2 if given else preset["SEEDS"]
        plan = harness.TablePlan(tables["pvd_t4"], "mini", preset, range(n), "cpu", tmp_path, cores=2, seeds_given=given)
        plan.build_data()
        plan.build()
        return {name: sorted(e.seed for e in exps["accuracy"] if isinstance(e, Train))
                for name, exps in plan.row_exps.items()}

    rows = seeds_per_row(False)
    assert rows["w/o distillation"] == rows["L_out,p + L_out,v + L_aff,p + L_aff,v"] == list(range(10))
    assert rows["L_out,p"] == rows["L_out,p + L_out,v"] == rows["L_out,p + L_out,v + L_aff,p"] == [0, 1, 2]
    assert all(seeds == [0, 1] for seeds in seeds_per_row(True).values())
