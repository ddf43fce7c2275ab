"""The harness's parallel training scheduler: at most ``jobs`` at once, a student only after its
teacher, a failure stops new starts and is raised (no training runs here: fake experiments)."""
import threading
import time

import pytest

from benchmark import harness
from benchmark.experiments import ExperimentError


class FakeTrain:
    def __init__(self, name, teacher=None, fail=False, cached=False):
        self.label, self.dir, self.teacher, self.fail, self._cached = name, name, teacher, fail, cached

    def cached(self):
        return self._cached

    def run(self, log):
        with LOCK:
            STATE["running"] += 1
            STATE["peak"] = max(STATE["peak"], STATE["running"])
            STATE["started"].append(self.label)
            STATE["events"].append(("start", self.label))
        time.sleep(0.05)
        with LOCK:
            STATE["running"] -= 1
            STATE["finished"].append(self.label)
            STATE["events"].append(("end", self.label))
        if self.fail:
            raise ExperimentError(f"{self.label} failed")
        return {}


LOCK = threading.Lock()
STATE = {}


@pytest.fixture(autouse=True)
def _state():
    STATE.update(running=0, peak=0, started=[], finished=[], events=[])


def _run(trainings, jobs):
    done = []
    harness.schedule_trainings(trainings, jobs, start=lambda e: None, done=lambda e: done.append(e.label))
    return done


def test_students_wait_for_their_teacher_and_jobs_bound_concurrency():
    teacher = FakeTrain("teacher")
    exps = [teacher, FakeTrain("nokd0"), FakeTrain("nokd1"), FakeTrain("kd0", teacher), FakeTrain("kd1", teacher)]
    done = _run(exps, jobs=2)
    assert sorted(done) == sorted(e.label for e in exps)
    assert STATE["peak"] == 2
    ev = STATE["events"]
    for kd in ("kd0", "kd1"):
        assert ev.index(("start", kd)) > ev.index(("end", "teacher"))


def test_one_job_runs_in_order():
    exps = [FakeTrain(f"r{i}") for i in range(4)]
    assert _run(exps, jobs=1) == ["r0", "r1", "r2", "r3"] and STATE["peak"] == 1


def test_cached_teacher_releases_students_and_is_reported_done():
    teacher = FakeTrain("teacher", cached=True)
    done = _run([teacher, FakeTrain("kd", teacher)], jobs=2)
    assert done == ["teacher", "kd"] and STATE["started"] == ["kd"]


def test_failure_stops_new_starts_and_raises():
    teacher = FakeTrain("teacher", fail=True)
    exps = [teacher, FakeTrain("kd0", teacher), FakeTrain("kd1", teacher)]
    with pytest.raises(ExperimentError, match="teacher failed"):
        _run(exps, jobs=2)
    assert "kd0" not in STATE["started"] and "kd1" not in STATE["started"]


def test_threads_per_job_shares_the_cores():
    assert harness.threads_per_job(2, cores=2) == 1
    assert harness.threads_per_job(1, cores=2) == 2
    assert harness.threads_per_job(4, cores=2) == 1
    assert harness.threads_per_job(2, cores=16) == 8


def test_share_counts_the_trainings_running_at_once():
    """A teacher its students wait for starts alone (every core); then two at a time."""
    teacher = FakeTrain("teacher")
    exps = [teacher, FakeTrain("kd0", teacher), FakeTrain("kd1", teacher), FakeTrain("kd2", teacher)]
    shares = {}
    harness.schedule_trainings(exps, 2, start=lambda e: None, done=lambda e: None,
                               share=lambda e, n: shares.__setitem__(e.label, harness.threads_per_job(n, cores=2)))
    assert shares == {"teacher": 2, "kd0": 1, "kd1": 1, "kd2": 1}
