"""Run records (:mod:`benchmark.records`): a finished training recorded once, found again by its hash
from another cache (another machine), never standing in for another spec, and the weight fingerprints
that tell a retrained teacher apart. No training: ``Train.execute`` is replaced by a stub that writes
a checkpoint and returns a result."""
import json

import pytest
import torch

from benchmark import records as rec
from benchmark.experiments import Train
from pcdet.utils.paths import REPO_ROOT

CFG = REPO_ROOT / "tools" / "cfgs" / "synthetic_models" / "pointpillar_4x.yaml"


class Data:
    spec = {"kind": "data", "frames": 8}
    root = "unused"


def _train(cache, store, seed=0, teacher=None, epochs=2):
    return Train(cache, "student", CFG, seed, epochs, Data(), "cpu", teacher=teacher, threads=1,
                 records=rec.RunRecords(store) if store else None)


@pytest.fixture
def fake_execute(monkeypatch):
    """Each execute writes a checkpoint of weights ``w`` (``calls`` counts them) and returns a result."""
    calls = []

    def execute(self, log):
        calls.append(self.label)
        ckpt = self.run_dir / "ckpt" / f"checkpoint_epoch_{self.epochs}.pth"
        ckpt.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"model_state": {"w": torch.full((3,), float(len(calls)))}, "epoch": self.epochs}, ckpt)
        return {"run_dir": str(self.run_dir), "metrics": {"bev_map": 40.0 + len(calls)}, "seed": self.seed,
                "weights_sha1": rec.weights_sha1(ckpt)}

    monkeypatch.setattr(Train, "execute", execute)
    return calls


def test_finished_training_is_recorded_and_found_from_another_cache(tmp_path, fake_execute):
    store = tmp_path / "records"
    first = _train(tmp_path / "cache_a", store)
    assert not first.cached()
    result = first.run(log=lambda m: None)
    path = store / "train" / f"student-{first.hash}.json"
    saved = json.loads(path.read_text())
    assert saved["hash"] == first.hash and saved["result"]["metrics"] == {"bev_map": 41.0}
    assert "config" not in saved["spec"] and saved["spec"]["config_sha1"] == rec.config_sha1(first.spec["config"])
    assert saved["spec"]["seed"] == 0 and saved["machine"]["cores"] >= 1 and saved["finished"].endswith("Z")
    other = _train(tmp_path / "cache_b", store)  # a fresh machine: empty cache, same records
    assert other.hash == first.hash and other.cached() and other.recorded() and not other.local()
    again = other.run(log=lambda m: None)
    assert fake_execute == ["student"]  # not trained again
    assert again["metrics"] == result["metrics"] and again["record"].endswith(path.name)


def test_a_record_never_stands_in_for_another_spec(tmp_path, fake_execute):
    store = tmp_path / "records"
    _train(tmp_path / "cache", store, seed=0).run(log=lambda m: None)
    for other in (_train(tmp_path / "c2", store, seed=1), _train(tmp_path / "c2", store, epochs=3),
                  _train(tmp_path / "c2", None)):
        assert not other.cached()


def test_record_with_a_wrong_hash_is_refused_with_its_file_named(tmp_path, fake_execute):
    store = tmp_path / "records"
    exp = _train(tmp_path / "cache", store)
    exp.run(log=lambda m: None)
    path = store / "train" / f"student-{exp.hash}.json"
    data = json.loads(path.read_text())
    path.write_text(json.dumps(dict(data, hash="0" * 12)))
    fresh = _train(tmp_path / "other", store)
    with pytest.raises(ValueError, match=path.name):
        fresh.result()
    path.write_text("{ not json")
    with pytest.raises(ValueError, match="cannot be read"):
        fresh.result()


def test_rerun_keeps_the_first_record_and_logs_both(tmp_path, fake_execute):
    store = tmp_path / "records"
    _train(tmp_path / "a", store).run(log=lambda m: None)
    exp = _train(tmp_path / "b", store)
    exp.rerun_locally = True  # a teacher whose checkpoint a student needs
    assert not exp.cached()
    logs = []
    exp.run(log=logs.append)
    assert fake_execute == ["student", "student"] and exp.local()
    assert any("trained again" in m and "bev_map 42.00" in m and "bev_map 41.00" in m for m in logs)
    assert exp.result()["metrics"] == {"bev_map": 41.0}  # the record stays the reported training


def test_weights_sha1_sees_weights_only(tmp_path):
    a, b, c = tmp_path / "a.pth", tmp_path / "b.pth", tmp_path / "c.pth"
    w = {"x": torch.arange(6.0).reshape(2, 3), "n": torch.tensor(3)}
    torch.save({"model_state": w, "optimizer_state": {"lr": 1}, "epoch": 1}, a)
    torch.save({"model_state": dict(w), "optimizer_state": {"lr": 2}, "epoch": 7}, b)
    torch.save({"model_state": dict(w, x=w["x"] + 1e-6)}, c)
    assert rec.weights_sha1(a) == rec.weights_sha1(b) != rec.weights_sha1(c)


def test_export_records_a_cache_with_weight_fingerprints_once(tmp_path, fake_execute):
    cache = tmp_path / "cache"
    teacher = Train(cache, "teacher", CFG, 0, 3, Data(), "cpu", threads=2)
    teacher.run(log=lambda m: None)
    student = _train(cache, None, teacher=teacher)
    student.run(log=lambda m: None)
    result_file = student.result_file
    res = json.loads(result_file.read_text())
    res.pop("weights_sha1")  # a result written before the fingerprints were kept
    result_file.write_text(json.dumps(res))
    store = tmp_path / "records"
    assert rec.export_cache(cache, store, log=lambda m: None) == 2
    assert rec.export_cache(cache, store, log=lambda m: None) == 0
    got = rec.RunRecords(store).load(_train(tmp_path / "elsewhere", store, teacher=teacher))["result"]
    assert got["teacher_weights_sha1"] == rec.weights_sha1(teacher.final_ckpt())
    assert got["weights_sha1"] == rec.weights_sha1(student.final_ckpt())
    assert rec.teacher_trainings([got, dict(got, teacher_weights_sha1="other"), {}]) == 2


def test_a_pinned_precision_is_its_own_experiment_and_reaches_the_training_command(tmp_path, monkeypatch):
    """A preset's MIXED_PRECISION enters the spec (a bf16 run never stands in for an fp32 one) and the
    command line; without it the spec has no such key, so the hashes of earlier records stand."""
    from pcdet.train_utils import launcher

    plain = _train(tmp_path / "c", None)
    pinned = Train(tmp_path / "c", "student", CFG, 0, 2, Data(), "cpu", threads=1, precision="none")
    bf16 = Train(tmp_path / "c", "student", CFG, 0, 2, Data(), "cpu", threads=1, precision="bf16")
    assert "mixed_precision" not in plain.spec and pinned.spec["mixed_precision"] == "none"
    assert len({plain.hash, pinned.hash, bf16.hash}) == 3
    seen = []

    def fake_run(cmd, logfile, env=None, tail_lines=15):
        seen.append(cmd)
        raise launcher.TrainingFailed("stub")

    monkeypatch.setattr(launcher, "run_training", fake_run)
    for exp in (plain, pinned):
        exp.dir.mkdir(parents=True, exist_ok=True)
        with pytest.raises(Exception, match="stub"):
            exp.execute(print)
    assert "--mixed_precision" not in seen[0]
    assert seen[1][seen[1].index("--mixed_precision") + 1] == "none"


def test_train_cli_takes_the_three_precisions_of_the_configs_only():
    import importlib.util

    spec = importlib.util.spec_from_file_location("train_cli", REPO_ROOT / "tools" / "train.py")
    train_cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train_cli)
    args = train_cli.parse_args(["--cfg_file", str(CFG), "--mixed_precision", "none"])
    assert args.mixed_precision == "none"
    with pytest.raises(SystemExit):
        train_cli.parse_args(["--cfg_file", str(CFG), "--mixed_precision", "fp16"])


def _diagnostics(n):
    return [{"step": i, "iteration": i + 1, "kd/cka": 1.0 / (i + 3), "kd/t_bn_gamma_min": 0.5} for i in range(n)]


def test_a_record_keeps_the_runs_kd_diagnostics_thinned(tmp_path, monkeypatch, fake_execute):
    """The record of a distilling run keeps at most DIAGNOSTICS_KEPT evenly spaced steps of its
    diagnostics (first and last), by column, rounded, without the *_min summaries; they read back as steps."""
    monkeypatch.setattr(rec, "DIAGNOSTICS_KEPT", 5)
    run_execute = Train.execute

    def execute(self, log):
        result = run_execute(self, log)
        (self.run_dir / "train_stats.json").write_text(json.dumps({"epochs": [], "kd_diagnostics": _diagnostics(9)}))
        return result

    monkeypatch.setattr(Train, "execute", execute)
    store = tmp_path / "records"
    first = _train(tmp_path / "cache", store)
    first.run(log=lambda m: None)
    kept = json.loads((store / "train" / f"student-{first.hash}.json").read_text())["result"]["kd_diagnostics"]
    assert kept["iteration"] == [1, 3, 5, 7, 9] and kept["step"] == [0, 2, 4, 6, 8]
    assert kept["kd/cka"] == [0.3333, 0.2, 0.1429, 0.1111, 0.09091] and "kd/t_bn_gamma_min" not in kept
    assert rec.diagnostics_steps(kept)[1] == {"step": 2, "iteration": 3, "kd/cka": 0.2}
    (first.run_dir / "train_stats.json").write_text(json.dumps({"kd_diagnostics": _diagnostics(10)}))
    assert rec.kept_diagnostics(first.run_dir, 4)["step"] == [0, 3, 6, 9]  # rounded positions, ends kept
    assert rec.kept_diagnostics(first.run_dir, 1)["step"] == [0, 9]
    assert rec.kept_diagnostics(first.run_dir, 20)["step"] == list(range(10))
    assert rec.diagnostics_steps({"a": [1, 2], "b": [3]}) == [{"a": 1, "b": 3}, {"a": 2}]


def test_export_adds_diagnostics_to_old_records_only_from_the_recorded_training(tmp_path, fake_execute):
    """A record written before records kept diagnostics gets them from the cache's run of the same hash,
    but only when that run's final weights are the recorded ones (not a retraining on another machine)."""
    cache, store = tmp_path / "cache", tmp_path / "records"
    student = _train(cache, store)
    student.run(log=lambda m: None)
    path = store / "train" / f"student-{student.hash}.json"
    assert "kd_diagnostics" not in json.loads(path.read_text())["result"]  # the run wrote none
    (student.run_dir / "train_stats.json").write_text(json.dumps({"kd_diagnostics": _diagnostics(3)}))
    saved = json.loads(path.read_text())
    saved["result"]["weights_sha1"] = "0" * 40  # the record of another training of this spec
    path.write_text(json.dumps(saved))
    assert rec.export_cache(cache, store, log=lambda m: None) == 0
    assert "kd_diagnostics" not in json.loads(path.read_text())["result"]
    saved["result"]["weights_sha1"] = rec.weights_sha1(student.final_ckpt())
    path.write_text(json.dumps(saved))
    rec.export_cache(cache, store, log=lambda m: None)
    got = json.loads(path.read_text())
    assert got["result"]["kd_diagnostics"]["iteration"] == [1, 2, 3]
    assert {k: v for k, v in got["result"].items() if k != "kd_diagnostics"} == saved["result"]
    assert got["hash"] == saved["hash"] and got["finished"] == saved["finished"]


def test_export_takes_the_diagnostics_of_the_checked_folder_not_the_run_dir_its_result_names(tmp_path, fake_execute):
    """A copied cache whose result.json names another cache's run directory: the diagnostics come from
    the folder whose checkpoint was checked against the record."""
    cache, store = tmp_path / "cache", tmp_path / "records"
    student = _train(cache, store)
    student.run(log=lambda m: None)
    path = store / "train" / f"student-{student.hash}.json"
    (student.run_dir / "train_stats.json").write_text(json.dumps({"kd_diagnostics": _diagnostics(2)}))
    other = tmp_path / "other_run"  # e.g. this machine's own training of the spec, elsewhere
    other.mkdir()
    (other / "train_stats.json").write_text(json.dumps({"kd_diagnostics": _diagnostics(7)}))
    res = json.loads(student.result_file.read_text())
    student.result_file.write_text(json.dumps(dict(res, run_dir=str(other))))
    saved = json.loads(path.read_text())
    saved["result"].pop("kd_diagnostics", None)
    path.write_text(json.dumps(saved))
    rec.export_cache(cache, store, log=lambda m: None)
    assert json.loads(path.read_text())["result"]["kd_diagnostics"]["iteration"] == [1, 2]
