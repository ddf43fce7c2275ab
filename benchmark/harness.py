"""Run one table of the registry under a preset and write its comparison CSV.

:func:`plan_table` turns the runnable rows of a table into cached experiments
(:mod:`benchmark.experiments`); :func:`run_table` runs what is not cached yet (with a progress
bar), then :func:`table_cells` reads the measured values out of the experiments' results and
writes ``<out>/<table id>.csv`` (:mod:`benchmark.results_csv`). Rows that cannot run yet keep
the paper's figures and an empty measured column.

What each measure contributes (a row's metrics are its ``PAPER`` keys plus these defaults):

* ``accuracy``: one ``train`` experiment per seed (``--seeds N`` = seeds 0..N-1) of the row's KD
  config (or model config without KD); a teacher row (``TEACHER: true``) is the teacher every KD
  row of the preset distils from: one run, seed 0. The table's ``TASK`` names the default accuracy
  metrics (detection: BEV / 3D mAP = mean of the three classes' moderate AP R40; segmentation: the
  official mIoU and the present-class mIoU);
  their values, and per-class ones such as ``bev_car_moderate``, come from the evaluator the
  dataset class declares (``metric_value``), so nothing here knows a dataset.
* paper reference rows (``REFERENCE``): never run; their figures are printed with the reason.
* ``complexity``: params and GMACs of the row's model (the deployed student) on the preset's frame.
* ``latency``: all rows' models in one round-robin run; ``speedup`` = reference row / this row, the
  reference being the teacher row of the row's own teacher config (else ``REFERENCE_ROW``).
* ``training_cost``: training-step medians of :mod:`benchmark.kd_overhead` (no KD, plain feature KD,
  PointDistiller) on the table's PointDistiller config, the KNN share, and the wall time of one
  real training epoch of each row's config (``train_stats.json``).
"""
import concurrent.futures
import os
import re
from pathlib import Path

import tqdm

from benchmark import registry
from benchmark.experiments import (
    Complexity, ExperimentError, KDOverhead, Latency, RealData, SyntheticData, Train, _rel, mean_std,
)
from benchmark.records import RunRecords, record_finished, teacher_trainings
from benchmark.results_csv import cell, write_table_csv
from pcdet.utils.paths import REPO_ROOT

DEFAULT_METRICS = {
    "complexity": ["gflops", "gflops_dense", "gflops_sparse", "params_m"],
    "latency": ["latency_ms"],
    "training_cost": ["step_s", "epoch_s", "step_ratio_vs_featurekd"],
}
#: table TASK -> default accuracy metrics
ACCURACY_METRICS = {"detection": ["bev_map", "3d_map"], "segmentation": ["miou", "miou_present"]}
DEFAULT_CACHE = REPO_ROOT / "output" / "benchmark" / "cache"


def _log(msg):
    tqdm.tqdm.write(f"[benchmark] {msg}")


def row_metrics(table, row):
    names = list(row["PAPER"]) + [m for m in row.get("METRICS", []) if m not in row["PAPER"]]
    for measure in table["MEASURES"]:
        defaults = ACCURACY_METRICS.get(table["TASK"], []) if measure == "accuracy" else DEFAULT_METRICS[measure]
        for m in defaults:
            if m == "step_ratio_vs_featurekd" and row.get("VARIANT") in (None, "no_kd"):
                continue
            if m not in names:
                names.append(m)
    if "training_cost" in table["MEASURES"] and row.get("VARIANT") == "pointdistiller" and "knn_share" not in names:
        names.append("knn_share")
    return names


class TablePlan:
    """The experiments of one table under one preset, and which rows they serve."""

    def __init__(self, table, preset_name, preset, seeds, device, cache_root, jobs=1, cores=None, seeds_given=False,
                 gpus_per_training=1, threads_per_training=None, row_pattern=None, records=None):
        self.table, self.preset_name, self.preset = table, preset_name, preset
        self.records = records  # benchmark.records.RunRecords of the trainings (None: the cache alone)
        self.seeds, self.device, self.cache_root = list(seeds), device, Path(cache_root)
        self.seeds_given = bool(seeds_given)  # --seeds on the command line: every row trains those
        self.jobs, self.cores = max(1, int(jobs)), int(cores or os.cpu_count() or 1)
        self.gpus_per_training = max(1, int(gpus_per_training))  # CUDA trainings: > 1 runs torchrun
        # a cluster job has its own CPUs: every training gets this many threads (None: share this machine's)
        self.threads_per_training = int(threads_per_training) if threads_per_training else None
        self.row_pattern = row_pattern  # --rows: a regular expression on row names (None: every row)
        self.selected = None  # the rows --rows matched, after build()
        self.runnable, self.status = registry.table_status(table, preset)
        self.data = None
        self.dataset_cls = self.evaluator_cls = None
        self.teachers = {}  # teacher config -> its Train experiment (seed 0, the preset's TEACHER_EPOCHS)
        self.row_exps = {}  # row name -> {"accuracy": [Train], "complexity": Complexity, "epoch": Train}
        self.table_exps = {}  # "latency" / "kd_overhead" -> experiment

    def row_seeds(self, row):
        """Seeds of a row's trainings: ``--seeds`` when given; else the preset's ``SEEDS_BY_KD`` entry for
        the table's config family and the row's KD key (``none``: no KD); else the preset's ``SEEDS``."""
        if not self.seeds_given:
            family = self.preset["FAMILY"].get(self.table["DATASET"], self.table["DATASET"])
            by_kd = (self.preset.get("SEEDS_BY_KD") or {}).get(family) or {}
            key = row.get("KD") or "none"
            if key in by_kd:
                return list(range(int(by_kd[key])))
        return self.seeds

    # data first: the frame the measurements use is the dataset's first val frame
    def build_data(self):
        from pcdet.datasets import get_dataset_class
        from pcdet.datasets.dataset import resolve_data_path
        from pcdet.datasets.registries import EVALUATORS
        from pcdet.train_utils.experiment import load_experiment_cfg

        spec = self.preset["DATA"]
        teacher_cfg = registry.teacher_config(self.table, self.preset)
        cfg = load_experiment_cfg(teacher_cfg)
        self.dataset_cls = get_dataset_class(cfg.DATA_CONFIG.DATASET)
        evaluator = self.dataset_cls.EVALUATOR
        self.evaluator_cls = EVALUATORS.get(evaluator, f"{self.dataset_cls.__name__}.EVALUATOR") if evaluator else None
        if spec["KIND"] == "synthetic":
            self.data = SyntheticData(self.cache_root, spec["FRAMES"], spec["SEED"], spec["VAL_FRACTION"], teacher_cfg)
        else:
            self.data = RealData(resolve_data_path(cfg.DATA_CONFIG.DATA_PATH), self.dataset_cls, cfg.DATA_CONFIG).check()
        return self.data

    def dataset_note(self):
        from pcdet.train_utils.experiment import load_experiment_cfg

        cfg = load_experiment_cfg(registry.teacher_config(self.table, self.preset))
        return self.dataset_cls.dataset_note_for(self.data.root, cfg.DATA_CONFIG)

    def score(self, result, metric):
        """A run's value of ``metric``: the mean over its last ``EVAL_LAST`` evaluations when the preset
        asks for it (each through the evaluator's ``metric_value``), else its final evaluation."""
        n = int(self.preset.get("EVAL_LAST") or 1)
        by_epoch = result.get("metrics_by_epoch") or {}
        if n > 1 and len(by_epoch) >= n:
            last = [by_epoch[e] for e in sorted(by_epoch, key=int)[-n:]]
            return sum(self.evaluator_cls.metric_value(m, metric) for m in last) / n
        return self.evaluator_cls.metric_value(result["metrics"], metric)

    def gate_reference(self):
        """The experiments the teacher gate compares: (teacher, the no-KD student of the lowest seed), the
        first no-KD row of the table paired with its own teacher (the one its family's KD rows distil
        from), so that a table of several families never gates one family's teacher on another's student."""
        for r in self.table["ROWS"]:
            if r["NAME"] not in self.row_exps or r.get("KD") or r.get("TEACHER"):
                continue
            teacher = self.teachers.get(registry.teacher_config(self.table, self.preset, r))
            runs = self.row_exps[r["NAME"]].get("accuracy")
            if teacher is not None and runs:
                return teacher, min(runs, key=lambda e: e.seed)
        return None

    def teacher_for(self, row):
        """The one teacher run a row's KD config distils from (a teacher row reports that same run)."""
        cfg = registry.teacher_config(self.table, self.preset, row)
        if cfg not in self.teachers:
            self.teachers[cfg] = Train(self.cache_root, f"teacher_{cfg.stem}", cfg, 0, self.preset["TEACHER_EPOCHS"],
                                       self.data, self.device, records=self.records,
                                       **self.training_settings(exclusive=True))
        return self.teachers[cfg]

    def training_settings(self, exclusive):
        """``threads``, ``exclusive``, ``gpus`` and ``precision`` (the preset's MIXED_PRECISION; None: each
        config's own) of a training, from the plan alone (see :func:`training_threads`; on a cluster,
        ``threads_per_training``: each job's own CPUs, whatever the driver's machine has)."""
        threads = self.threads_per_training or training_threads(exclusive, self.jobs, self.cores)
        return {"threads": threads, "exclusive": exclusive,
                "gpus": self.gpus_per_training, "precision": self.preset.get("MIXED_PRECISION")}

    def build(self):
        """All experiments (after :meth:`build_data` has produced the data)."""
        t, p = self.table, self.preset
        rows = [r for r in t["ROWS"] if r["NAME"] in self.runnable]
        frame = self.data.first_val_frame()
        for r in rows:
            model_cfg, kd_cfg = registry.config_paths(t, r, p)
            teacher = self.teacher_for(r) if (kd_cfg or r.get("TEACHER")) else None
            exps = {}
            if "accuracy" in t["MEASURES"]:
                if r.get("TEACHER"):
                    exps["accuracy"] = [teacher]
                else:
                    cfg = kd_cfg or model_cfg
                    extra = []
                    if p.get("EVAL_LAST"):
                        extra += ["--eval_last", str(p["EVAL_LAST"])]
                    if kd_cfg and p.get("KD_DIAGNOSTICS"):
                        extra += ["--kd_diagnostics", str(p["KD_DIAGNOSTICS"])]
                    exps["accuracy"] = [Train(self.cache_root, cfg.stem, cfg, s, p["EPOCHS"], self.data, self.device,
                                              teacher=teacher if kd_cfg else None, extra_args=extra,
                                              records=self.records, **self.training_settings(exclusive=False))
                                        for s in self.row_seeds(r)]
            if "complexity" in t["MEASURES"]:
                exps["complexity"] = Complexity(self.cache_root, model_cfg.stem, model_cfg, frame)
            if "training_cost" in t["MEASURES"]:
                cfg = kd_cfg or model_cfg
                # its epoch time is a measurement: it runs alone, with every core
                exps["epoch"] = Train(self.cache_root, f"{cfg.stem}_1epoch", cfg, 0, 1, self.data, self.device,
                                      teacher=teacher if kd_cfg else None, extra_args=["--no_eval"],
                                      **self.training_settings(exclusive=True))
            self.row_exps[r["NAME"]] = exps
        if "latency" in t["MEASURES"] and rows:
            cfgs = list(dict.fromkeys(registry.config_paths(t, r, p)[0] for r in rows))
            lat = p["LATENCY"]
            self.table_exps["latency"] = Latency(self.cache_root, t["ID"], cfgs, frame, self.device, lat["RUNS"],
                                                 lat["WARMUP"])
        if "training_cost" in t["MEASURES"]:
            pd_rows = [r for r in rows if r.get("VARIANT") == "pointdistiller"]
            if pd_rows:
                kd_cfg = registry.config_paths(t, pd_rows[0], p)[1]
                ko = p["KD_OVERHEAD"]
                self.table_exps["kd_overhead"] = KDOverhead(self.cache_root, kd_cfg.stem, kd_cfg, frame, ko["STEPS"],
                                                            ko["WARMUP"])
        if self.row_pattern:
            self._select_rows()
        return self

    def _select_rows(self):
        """``--rows``: keep the rows whose name matches the pattern, the teacher rows of the teachers those
        rows distil from (they train in this run anyway), and the other rows whose experiments are all
        cached already (their cells come from the cache); the other rows stay empty in the CSV. The
        teachers left are those a kept row reports or distils from; the table-wide timings (latency, KD
        overhead) stay, they measure every runnable row's config at once."""
        pattern = re.compile(self.row_pattern)

        def flat(exps):
            return [e for v in exps.values() for e in (v if isinstance(v, list) else [v]) if e is not None]

        self.selected = [n for n in self.row_exps if pattern.search(n)]
        needed = {id(e.teacher) for n in self.selected for e in flat(self.row_exps[n]) if getattr(e, "teacher", None)}
        self.row_exps = {n: exps for n, exps in self.row_exps.items()
                         if n in self.selected or all(e.cached() for e in flat(exps))
                         or any(id(e) in needed for e in exps.get("accuracy", []))}
        used = {id(x) for exps in self.row_exps.values() for e in flat(exps)
                for x in (e, getattr(e, "teacher", None)) if x is not None}
        self.teachers = {cfg: t for cfg, t in self.teachers.items() if id(t) in used}

    def experiments(self):
        """Every experiment once, in run order (teacher before the rows that distil from it; with the
        preset's ``ORDER: seed``, the students seed by seed, every row of seed 0 first)."""
        out = list(self.teachers.values())
        students = [e for exps in self.row_exps.values() for e in exps.get("accuracy", []) if e not in out]
        if self.preset.get("ORDER") == "seed":
            students = sorted(students, key=lambda e: e.seed)  # stable: row order within a seed
        out += students
        for exps in self.row_exps.values():
            for key in ("complexity", "epoch"):
                val = exps.get(key)
                for e in (val if isinstance(val, list) else [val] if val else []):
                    out.append(e)
        out += list(self.table_exps.values())
        seen, order = set(), []
        for e in out:
            if e.dir not in seen:
                seen.add(e.dir)
                order.append(e)
        return order


SLURM_CPUS_PER_TRAINING = 8  # CPUs (= torch threads) of one cluster training job unless given


def threads_per_job(jobs, cores=None):
    """Torch threads of each of ``jobs`` parallel trainings: the cores shared out, at least one."""
    cores = cores or os.cpu_count() or 1
    return max(1, cores // max(1, jobs))


def training_threads(exclusive, jobs, cores=None):
    """The CPU threads of one training, a function of the plan only (never of what else happens to be
    running when it starts, so two runs of one seed compute alike): an ``exclusive`` training (a
    teacher, or one whose epoch time is measured) runs alone with every core; every other training
    shares the cores with up to ``jobs - 1`` others: ``cores // jobs``."""
    cores = cores or os.cpu_count() or 1
    return cores if exclusive else threads_per_job(jobs, cores)


class PoolRunner:
    """Runs trainings in a thread pool (each training is a child process); what the scheduler uses
    unless a test injects its own runner with the same two methods."""

    def __init__(self, jobs):
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=max(1, jobs))

    def submit(self, e):
        return self.pool.submit(e.run, _log)

    def wait(self, futures):
        """Block until at least one of ``futures`` has finished; return the finished ones."""
        finished, _ = concurrent.futures.wait(futures, return_when=concurrent.futures.FIRST_COMPLETED)
        return finished

    def close(self):
        self.pool.shutdown(wait=True)


def require_teacher_checkpoints(trainings):
    """A training still to run needs its teacher's checkpoint: a teacher known only from its run record
    (:mod:`benchmark.records`: no weights) is trained again here (``rerun_locally``). Returns those teachers."""
    again = []
    for e in trainings:
        t = e.teacher
        if t is not None and not e.cached() and not t.local() and not t.rerun_locally:
            t.rerun_locally = True
            again.append(t)
            _log(f"{e} needs the checkpoint of {t}, known here from its record only: the teacher trains again")
    return again


def schedule_trainings(trainings, jobs, start, done, runner=None):
    """Run ``Train`` experiments: first the ``exclusive`` ones, one at a time and alone (teachers come
    first in plan order), then the others, at most ``jobs`` at once, each after the teacher it distils
    from. The thread count of each was fixed when the plan was built (:func:`training_threads`); the
    order in which trainings finish changes when they start, never how they compute.

    ``start(e)`` is called before a training is submitted, ``done(e)`` after it finished. ``runner``
    (default :class:`PoolRunner`) has ``submit(e) -> future`` and ``wait(futures) -> finished
    futures``. Failed trainings raise their :class:`ExperimentError` once the running ones have
    finished; the rest are not started. Returns when every training has run. A teacher known only from
    its run record whose students still train is trained again first (:func:`require_teacher_checkpoints`).
    """
    trainings = list(trainings)
    trainings += [t for t in require_teacher_checkpoints(trainings) if t not in trainings]
    ran = {e.dir for e in trainings if e.cached()}
    for e in trainings:
        if e.dir in ran:
            done(e)
    # a teacher finished earlier (e.g. before a gate) releases its students even when not in this list
    ran |= {e.teacher.dir for e in trainings if e.teacher is not None and e.teacher.cached()}
    pending = sorted((e for e in trainings if e.dir not in ran), key=lambda e: not getattr(e, "exclusive", False))
    errors = []
    own = runner is None
    runner = PoolRunner(jobs) if own else runner
    try:
        running = {}
        while pending or running:
            if not errors:
                for e in list(pending):
                    if any(getattr(r, "exclusive", False) for r in running.values()):
                        break
                    if e.teacher is not None and e.teacher.dir not in ran:
                        continue  # waits for its teacher
                    if getattr(e, "exclusive", False) and running:
                        break  # starts alone, once the running ones have finished
                    if len(running) >= max(1, jobs):
                        break
                    pending.remove(e)
                    start(e)
                    running[runner.submit(e)] = e
                    if getattr(e, "exclusive", False):
                        break
            if not running:
                break
            for f in runner.wait(list(running)):
                e = running.pop(f)
                try:
                    f.result()
                except ExperimentError as err:
                    errors.append(err)
                    continue
                ran.add(e.dir)
                done(e)
    finally:
        if own:
            runner.close()
    if errors:
        raise errors[0]
    if pending:
        raise ExperimentError(f"{pending[0]} waits for a teacher that is not part of the plan: {pending[0].teacher}")


def run_plan(plan, jobs=None, runner=None):
    """Run what is not cached. Trainings: exclusive ones (teachers, timed epochs) alone with every
    core, then the rest ``jobs`` at a time (default: the plan's) with ``cores // jobs`` threads each,
    as fixed in the plan; the other experiments (complexity, latency, KD overhead) run afterwards, one
    at a time and alone, so that no timing is taken while a training shares the machine. ``runner``:
    where they run (None: this machine; a :class:`benchmark.launchers.SubmititRunner`: cluster jobs)."""
    jobs = plan.jobs if jobs is None else jobs
    exps = plan.experiments()
    cached = sum(e.cached() for e in exps)
    _log(f"{plan.table['ID']} ({plan.preset_name}): {len(plan.runnable)}/{len(plan.table['ROWS'])} rows runnable, "
         f"{len(exps)} experiments, {cached} cached, {len(exps) - cached} to run; cache {_rel(plan.cache_root)}; "
         f"{jobs} training job(s) at a time on {plan.cores} cores")
    trainings = [e for e in exps if isinstance(e, Train)]
    others = [e for e in exps if not isinstance(e, Train)]

    try:
        _run_plan_experiments(plan, jobs, runner, exps, trainings, others)
    except BaseException:
        if runner is not None and hasattr(runner, "cancel_outstanding"):
            runner.cancel_outstanding()
        raise


def _run_plan_experiments(plan, jobs, runner, exps, trainings, others):
    with tqdm.tqdm(total=len(exps), desc=plan.table["ID"], dynamic_ncols=True) as bar:
        active = set()

        def start(e):
            active.add(e.label)
            bar.set_postfix_str(f"running: {', '.join(sorted(active))}")
            _log(f"running {e} with {e.threads} thread(s){' alone' if e.exclusive else ''} -> {_rel(e.dir)}")

        def done(e):
            active.discard(e.label)
            bar.set_postfix_str(f"running: {', '.join(sorted(active))}" if active else f"done: {e.label}")
            bar.update()

        gate = plan.gate_reference() if plan.preset.get("GATE") else None
        if gate is not None:
            first = [e for e in trainings if e in gate or e.teacher is None and e.exclusive]
            schedule_trainings(first, jobs, start, done, runner)
            check_gate(plan, *gate)
            trainings = [e for e in trainings if e not in first]
        schedule_trainings(trainings, jobs, start, done, runner)
        for e in others:
            state = "cached" if e.cached() else "running"
            bar.set_postfix_str(f"{state}: {e.kind} {e.label}")
            if not e.cached():
                _log(f"running {e} -> {_rel(e.dir)}")
                if runner is not None:
                    runner.run_alone(e)
            e.run(log=_log)  # (cached by now when a runner ran it)
            bar.update()


def _how_trained(results):
    """``precision`` and ``threads`` of training results, for the CSV (a run older than their recording: empty)."""
    return {"precision": [res.get("precision") for res in results], "threads": [res.get("threads") for res in results]}


def check_gate(plan, teacher, student):
    """The preset's teacher gate: teacher minus no-KD student (seed ``student.seed``) moderate AP per class,
    BEV and 3D, against ``GATE.MIN_GAP``; printed, written to ``<cache>/gates/<table>.json``, and returned.
    A class below the gap is flagged (the run goes on: a schedule that cannot reach it is reported as such)."""
    import json

    gap_min = float(plan.preset["GATE"].get("MIN_GAP", 5.0))
    t_res, s_res = teacher.result(), student.result()
    rows, flagged = [], []
    for kind in ("bev", "3d"):
        for cls in ("car", "ped", "cyc"):
            name = f"{kind}_{cls}_moderate"
            t, s = plan.score(t_res, name), plan.score(s_res, name)
            ok = t - s >= gap_min
            rows.append({"metric": name, "teacher": round(t, 2), "student_no_kd": round(s, 2),
                         "gap": round(t - s, 2), "passes": ok})
            if not ok:
                flagged.append(name)
    _log(f"teacher gate (teacher - no-KD student seed {student.seed} >= {gap_min} moderate AP per class):")
    for r in rows:
        _log(f"  {r['metric']:18s} teacher {r['teacher']:6.2f}  student {r['student_no_kd']:6.2f}  gap "
             f"{r['gap']:+6.2f}  {'ok' if r['passes'] else 'FLAGGED: below the gate'}")
    if flagged:
        _log(f"gate missed for {', '.join(flagged)}: those classes are flagged in the report; the run goes on")
    out = Path(plan.cache_root) / "gates" / f"{plan.table['ID']}_{plan.preset_name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    record = {"min_gap": gap_min, "teacher": _rel(teacher.dir), "student": _rel(student.dir), "rows": rows,
              "flagged": flagged}
    out.write_text(json.dumps(record, indent=1) + "\n")
    plan.gate = record
    return record


#: complexity metric of a table -> key of benchmark.complexity's result (dense: what the papers' counter
#: counts; sparse: the sparse convolutions' MACs from their rulebooks; gflops: both)
COMPLEXITY_KEYS = {"gflops": "gmacs", "gflops_dense": "gmacs_dense", "gflops_sparse": "gmacs_sparse",
                   "params_m": "params_m"}


def speedup_reference(table, row, plan):
    """The row a row's ``speedup`` is measured against: the teacher row of the same teacher config (a
    SECOND student against the SECOND teacher, as the paper's speed-ups are), else ``REFERENCE_ROW``
    (default: the first row); None when that row did not run."""
    cfg = registry.teacher_config(table, plan.preset, row)
    own = next((r for r in table["ROWS"] if r.get("TEACHER") and r["NAME"] in plan.row_exps
                and registry.teacher_config(table, plan.preset, r) == cfg), None)
    name = own["NAME"] if own else (table.get("REFERENCE_ROW") or table["ROWS"][0]["NAME"])
    ref = next((r for r in table["ROWS"] if r["NAME"] == name), None)
    return ref if ref is not None and ref["NAME"] in plan.row_exps else None


def table_cells(plan):
    """The CSV lines of the table: every row, paper figures and what the experiments measured."""
    t, note = plan.table, plan.dataset_note()
    common = {"preset": plan.preset_name}
    lat = plan.table_exps.get("latency")
    lat_res = lat.result() if lat else None
    ko = plan.table_exps.get("kd_overhead")
    ko_res = ko.result() if ko else None
    lines = []
    for r in t["ROWS"]:
        exps = plan.row_exps.get(r["NAME"], {})
        for metric in row_metrics(t, r):
            values, source, how = None, None, {}
            if exps and plan.evaluator_cls is not None and plan.evaluator_cls.is_table_metric(metric) \
                    and exps.get("accuracy"):
                results = [e.result() for e in exps["accuracy"]]
                values = [plan.score(res, metric) for res in results]
                source = [res.get("record") or res["run_dir"] for res in results]
                n_teachers = teacher_trainings(results)
                if n_teachers > 1:  # a teacher trained again (records across machines): the CSV says so
                    source.append(f"distilled from {n_teachers} trainings of the same teacher spec")
                how = dict(_how_trained(results), values=values, seeds=[e.seed for e in exps["accuracy"]])
            elif exps and metric in COMPLEXITY_KEYS and exps.get("complexity"):
                res = exps["complexity"].result()
                values, source = [res[COMPLEXITY_KEYS[metric]]], res["source"]
            elif exps and metric == "latency_ms" and lat_res:
                key = _rel(registry.config_paths(t, r, plan.preset)[0])
                values, source = [lat_res["median_ms"][key]], lat_res["source"]
            elif exps and metric == "speedup" and lat_res and speedup_reference(t, r, plan) is not None:
                key = _rel(registry.config_paths(t, r, plan.preset)[0])
                ref_key = _rel(registry.config_paths(t, speedup_reference(t, r, plan), plan.preset)[0])
                values, source = [lat_res["median_ms"][ref_key] / lat_res["median_ms"][key]], lat_res["source"]
            elif exps and metric in ("step_s", "step_ratio_vs_featurekd", "knn_share") and ko_res and r.get("VARIANT"):
                steps = ko_res["step_s"]
                if metric == "step_s":
                    values = [steps[r["VARIANT"]]]
                elif metric == "step_ratio_vs_featurekd":
                    values = [steps[r["VARIANT"]] / steps["featurekd_all"]]
                else:
                    values = [steps["pointdistiller_knn"] / steps["pointdistiller"]]
                source = ko_res["source"]
            elif exps and metric == "epoch_s" and exps.get("epoch"):
                res = exps["epoch"].result()
                values, source, how = [res["epochs"][0]["seconds"]], res["run_dir"], _how_trained([res])
            if values:
                mean, std = mean_std([float(v) for v in values])
                lines.append(cell(t["ID"], r["NAME"], metric, paper=r["PAPER"].get(metric), measured=mean,
                                  measured_std=std, n_seeds=len(values), dataset=note, device=plan.device,
                                  source=source, **how, **common))
            else:
                lines.append(cell(t["ID"], r["NAME"], metric, paper=r["PAPER"].get(metric), reference=r.get("REFERENCE"),
                                  **common))
    return lines


def experiment_status(e):
    """What running ``e`` would do now, as ``(state, epochs_done)``: ``cached``; for a training with
    checkpoints but no result, ``resumes after epoch N of E`` (E: the plan's epochs, ``?`` where the
    config decides them, as under the paper preset); else ``to run``. ``epochs_done``: N (0 unless resuming)."""
    from pcdet.train_utils.train_utils import checkpoint_epoch, latest_checkpoint

    if e.local():
        return "cached", 0
    if e.cached():
        return "recorded", 0
    if isinstance(e, Train):
        newest = latest_checkpoint(e.run_dir / "ckpt")
        if newest is not None:
            done = checkpoint_epoch(newest)
            return f"resumes after epoch {done} of {e.epochs if e.epochs is not None else '?'}", done
    return "to run", 0


def plan_status_lines(plan):
    """One line per experiment of ``plan`` (kind, label, seed, :func:`experiment_status`, cache folder)
    and a summary: what ``--dry_run`` prints. Epochs left count only trainings whose epochs the plan fixes."""
    exps = plan.experiments()
    lines, left, todo, unknown, recorded = [], 0, 0, 0, 0
    for e in exps:
        state, done = experiment_status(e)
        recorded += state == "recorded"
        if state not in ("cached", "recorded"):
            todo += 1
            if isinstance(e, Train):
                if e.epochs is None:
                    unknown += 1
                else:
                    left += int(e.epochs) - done
        seed = f"seed {e.seed}" if isinstance(e, Train) else ""
        lines.append(f"{e.kind:11s} {e.label:48s} {seed:8s} {state:28s} {_rel(e.dir)}")
    summary = (f"{plan.table['ID']} ({plan.preset_name}): {len(exps)} experiments, {len(exps) - todo} cached"
               f"{f' ({recorded} of them from run records)' if recorded else ''}, "
               f"{todo} to run or resume; {left} training epochs left")
    if unknown:
        summary += f" (+ {unknown} training(s) whose epochs their configs set)"
    lines.append(summary)
    return lines


def run_table(table_id, preset_name="smoke", seeds=None, out=None, device="cpu", cache_root=None, tables=None,
              jobs=None, launcher="local", gpus_per_training=1, slurm=None, rows=None, dry_run=False, records=None):
    """Plan, run (cached) and write ``<out>/<table_id>.csv``; returns (csv path, lines, plan).

    ``jobs``: trainings at once (default: the preset's ``JOBS``, else 1). ``launcher``: ``local`` or
    ``slurm`` (:mod:`benchmark.launchers`; ``slurm`` holds its options: cluster, partition, timeout_min and
    ``cpus_per_training``, the CPUs and threads of every training job, default
    :data:`SLURM_CPUS_PER_TRAINING`: the plan never reads the driver's core count there);
    ``gpus_per_training``: GPUs of each CUDA training (> 1: torchrun inside the job). ``rows``: a regular
    expression on row names; only the matching rows run (the others are filled from the cache where
    everything they need is cached, else left empty: :meth:`TablePlan._select_rows`). ``dry_run``: print
    :func:`plan_status_lines` and return ``(None, lines, plan)`` without running or writing a CSV (the
    embedded data is generated first when missing, since the plan names its frames). ``records``: a
    folder of run records (:mod:`benchmark.records`): recorded trainings are not trained again, finished
    ones are recorded there."""
    tables = tables or registry.load_tables()
    if table_id not in tables:
        raise SystemExit(f"unknown table {table_id!r}; known: {', '.join(tables)}")
    presets = registry.load_presets()
    if preset_name not in presets:
        raise SystemExit(f"unknown preset {preset_name!r}; known: {', '.join(presets)}")
    preset = presets[preset_name]
    n = int(seeds if seeds is not None else preset["SEEDS"])
    if n < 1:
        raise SystemExit("--seeds must be >= 1")
    jobs = int(jobs if jobs is not None else preset.get("JOBS", 1))
    if jobs < 1:
        raise SystemExit("--jobs must be >= 1")
    out = Path(out) if out else REPO_ROOT / "output" / "benchmark" / preset_name
    slurm = dict(slurm or {})
    cpus = slurm.pop("cpus_per_training", None)
    cpus = (SLURM_CPUS_PER_TRAINING if cpus is None else int(cpus)) if launcher == "slurm" else None
    if cpus is not None and cpus < 1:
        raise SystemExit("--slurm_cpus_per_training must be >= 1")
    plan = TablePlan(tables[table_id], preset_name, preset, range(n), device, cache_root or DEFAULT_CACHE, jobs=jobs,
                     seeds_given=seeds is not None, gpus_per_training=gpus_per_training, threads_per_training=cpus,
                     row_pattern=rows, records=RunRecords(records) if records else None)
    if not plan.runnable:
        waits = sorted({m for ms in plan.status.values() for m in ms})
        raise SystemExit(f"{table_id} is not runnable yet; it waits for: {', '.join(waits)}")
    if rows is not None:
        try:
            matched = [n for n in plan.runnable if re.search(rows, n)]
        except re.error as err:
            raise SystemExit(f"--rows {rows!r} is not a regular expression: {err}") from None
        if not matched:
            raise SystemExit(f"--rows {rows!r} matches no runnable row of {table_id}; runnable: {plan.runnable}")
        _log(f"--rows {rows!r}: {len(matched)} of {len(plan.runnable)} runnable rows run: {', '.join(matched)}")
    try:
        data = plan.build_data()
        if isinstance(data, SyntheticData):
            if not data.cached():
                _log(f"data: {data} -> {_rel(data.dir)}")
            data.run(log=_log)
        plan.build()
        if dry_run:
            lines = plan_status_lines(plan)
            for line in lines:
                print(line)
            return None, lines, plan
        from benchmark.launchers import make_runner

        if plan.records is not None:  # finished here before --records: recorded now
            record_finished(plan.experiments(), log=_log)
        run_plan(plan, runner=make_runner(launcher, jobs, plan.cache_root, device,
                                          gpus_per_training=gpus_per_training, **slurm))
    except ExperimentError as err:
        raise SystemExit(f"[benchmark] {err}") from None
    lines = table_cells(plan)
    path = write_table_csv(out / f"{table_id}.csv", lines)
    _log(f"wrote {_rel(path)} ({sum(1 for x in lines if x['measured'] != '')} measured cells, dataset: "
         f"{plan.dataset_note()})")
    return path, lines, plan
