"""Run records: the results of finished trainings, small enough to keep in git, so that a benchmark run
longer than the life of one machine's experiment cache resumes where it stopped.

The experiment cache (:mod:`benchmark.experiments`, ``output/benchmark/cache``) holds checkpoints, logs
and results; it lives on one machine. A design such as ten seed-paired seeds of several arms takes more
CPU hours than one machine keeps its disk. ``python -m benchmark run ... --records DIR`` (the project keeps
its own under ``benchmark/results/records``) therefore also writes, for every training that finishes, a
record ``DIR/<kind>/<label>-<hash>.json``: the experiment's hash (the same sha1 of its resolved spec as
the cache folder's), its spec with the resolved config reduced to its sha1, the machine it trained on, when
it finished, and its result (final and per-epoch metrics, precision, threads, epoch times). A later run
with the same ``--records`` finds a training's record by its hash and takes the result from it instead of
training again; anything that changes the spec (config, seed, epochs, data, teacher, threads) changes the
hash, so a record never stands in for another experiment.

A record holds no weights. A student that still has to train needs its teacher's checkpoint: when the
teacher is recorded but not in the local cache, the harness trains the teacher again (same spec) before
that student (:func:`benchmark.harness.schedule_trainings`). Retrained on another CPU its weights differ
in rounding (the kernels differ), so every training that distils records ``teacher_weights_sha1`` (the
sha1 of its teacher's weights) and the teacher's record keeps the figures of its *first* training; the
harness logs the retrained teacher's figures beside the recorded ones, and :func:`teacher_trainings`
counts how many distinct teacher trainings a row's students distilled from (the CSV's ``source`` says so
when it is more than one).

A distilling training's record also keeps its KD diagnostics (:mod:`pcdet.kd.diagnostics`, from the
run's ``train_stats.json``), at most :data:`DIAGNOSTICS_KEPT` evenly spaced steps at 4 significant
digits, so that the report's diagnostics plot and table can be drawn on a machine that never held the run.

``python -m benchmark records --cache C --records DIR`` copies the finished trainings of an existing cache
into records (for a run started without ``--records``), and adds the diagnostics to records written
before they were kept, from the run directory in C of the same hash whose final checkpoint holds the
recorded weights.
"""
import datetime
import hashlib
import json
import os
from pathlib import Path

from pcdet.utils.paths import REPO_ROOT, repo_relative

RECORD_VERSION = 1
#: experiment kinds that are recorded: trainings (what takes hours); complexity, latency and overhead
#: measurements are taken again on the machine of the run
RECORDED_KINDS = ("train",)


#: how many of a run's KD diagnostic steps a record keeps (evenly spaced, first and last included): a
#: training of the paired preset logs 160 (every 20 of 3200 iterations), all kept, so that the report's
#: figures drawn from a record equal those drawn from the run directory
DIAGNOSTICS_KEPT = 200


def kept_diagnostics(run_dir, kept=None):
    """The KD diagnostics of a run directory as a record keeps them: at most ``kept`` evenly spaced steps
    of its ``train_stats.json`` ``kd_diagnostics`` (first and last included), the per-level ``*_min``
    summaries left out and values at 4 significant digits, by column (``{name: [value or None per
    step]}``, :func:`diagnostics_steps` turns it back into steps); None without a run or diagnostics."""
    if not run_dir:
        return None
    run = Path(run_dir)
    stats = (run if run.is_absolute() else REPO_ROOT / run) / "train_stats.json"
    try:
        steps = json.loads(stats.read_text()).get("kd_diagnostics") or []
    except (OSError, json.JSONDecodeError):
        return None
    if not steps:
        return None
    kept = max(int(kept or DIAGNOSTICS_KEPT), 2)
    n = len(steps)
    chosen = [steps[i] for i in (sorted({round(i * (n - 1) / (kept - 1)) for i in range(kept)}) if n > kept
                                 else range(n))]
    names = dict.fromkeys(k for step in chosen for k in step if not k.endswith("_min"))
    return {k: [(float(f"{step[k]:.4g}") if isinstance(step.get(k), float) else step.get(k)) for step in chosen]
            for k in names}


def diagnostics_steps(columns):
    """The steps (``[{name: value}]``, as ``train_stats.json`` lists them) of :func:`kept_diagnostics`' columns."""
    n = max((len(v) for v in columns.values()), default=0)
    return [{k: v[i] for k, v in columns.items() if i < len(v) and v[i] is not None} for i in range(n)]


def config_sha1(config):
    return hashlib.sha1(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()


def record_spec(spec):
    """The spec as a record keeps it: the resolved config replaced by ``config_sha1`` (the rest as is)."""
    out = {k: v for k, v in spec.items() if k != "config"}
    if "config" in spec:
        out["config_sha1"] = config_sha1(spec["config"])
    return out


def weights_sha1(ckpt_path):
    """sha1 of a checkpoint's model weights (tensor names, dtypes, shapes and bytes, in name order):
    equal for equal weights whatever else the file holds (optimizer state, epoch)."""
    import torch

    state = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    state = state.get("model_state", state)
    h = hashlib.sha1()
    for name in sorted(state):
        t = state[name]
        if not isinstance(t, torch.Tensor):
            continue
        t = t.detach().contiguous().cpu()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def machine_description():
    """The CPU a training ran on: its model name, torch's capability and bf16 units."""
    from pcdet.train_utils.precision import bf16_units, cpu_features, cpu_model_name

    feats = cpu_features()
    units = bf16_units(feats)
    return {"cpu": cpu_model_name(), "cores": os.cpu_count(), "capability": feats["capability"], "bf16_units": units}


class RunRecords:
    """The record folder: ``has`` / ``load`` / ``save`` by experiment (its kind, label and hash)."""

    def __init__(self, root):
        self.root = Path(root)

    def path(self, exp):
        return self.root / exp.kind / f"{exp.label}-{exp.hash}.json"

    def has(self, exp):
        return exp.kind in RECORDED_KINDS and self.path(exp).is_file()

    def load(self, exp):
        """The record of ``exp`` (a dict with ``result``), checked against its hash."""
        path = self.path(exp)
        try:
            rec = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"run record {repo_relative(path)} cannot be read: {err}") from None
        if rec.get("hash") != exp.hash or "result" not in rec:
            raise ValueError(f"run record {repo_relative(path)} is not the record of {exp} "
                             f"(hash {rec.get('hash')!r}); remove it or the folder's stale copy")
        return rec

    def result(self, exp):
        """The recorded result, its ``record`` key naming the record file (the CSV's provenance)."""
        rec = self.load(exp)
        return dict(rec["result"], record=repo_relative(self.path(exp)))

    def save(self, exp, result, spec=None, machine=None, finished=None):
        """Write the record of a finished experiment unless one exists (the first training stays the
        record; returns False then). Atomic."""
        if exp.kind not in RECORDED_KINDS:
            return False
        path = self.path(exp)
        if path.is_file():
            return False
        result = {k: v for k, v in result.items() if k != "record"}
        if "kd_diagnostics" not in result:
            diagnostics = kept_diagnostics(result.get("run_dir"))
            if diagnostics:
                result["kd_diagnostics"] = diagnostics
        rec = {"record_version": RECORD_VERSION, "kind": exp.kind, "label": exp.label, "hash": exp.hash,
               "spec": record_spec(spec if spec is not None else exp.spec),
               "machine": machine if machine is not None else machine_description(),
               "finished": finished or datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
               "result": result}
        self._write(path, rec)
        return True

    def add_diagnostics(self, exp):
        """Add the KD diagnostics of the finished cache folder ``exp`` (a :class:`_CachedExperiment`) to its
        record written before records kept them, when the folder's final weights are the recorded ones
        (a training of the same spec on another machine is another run); True if the record changed."""
        if not self.has(exp):
            return False
        rec = self.load(exp)
        res = rec["result"]
        if res.get("kd_diagnostics") or not res.get("weights_sha1"):
            return False
        ckpt = final_checkpoint(exp.folder)
        # the diagnostics of the run directory whose checkpoint is checked (<run_dir>/ckpt/...), never the
        # run_dir its result names, which may be another cache's path
        diagnostics = kept_diagnostics(ckpt.parent.parent) if ckpt is not None else None
        if not diagnostics or weights_sha1(ckpt) != res["weights_sha1"]:
            return False
        res["kd_diagnostics"] = diagnostics
        self._write(self.path(exp), rec)
        return True

    @staticmethod
    def _write(path, rec):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(rec, indent=1, sort_keys=True, default=str) + "\n")
        os.replace(tmp, path)


def record_finished(exps, log=print):
    """Record the experiments of a plan that finished in the local cache but have no record yet (trained
    before ``--records`` was given, or by another run of the same cache); returns how many."""
    return sum(_record_cached(e.records, _CachedExperiment(e.dir), log) for e in exps
               if getattr(e, "records", None) is not None and e.kind in RECORDED_KINDS and e.local())


def _record_cached(store, exp, log, machine=None):
    """Record a finished cache folder (``exp``: a :class:`_CachedExperiment`) unless recorded; True if written.
    Its finish time is the result file's; the weight fingerprints come from the cache's checkpoints."""
    if store.has(exp):
        return False
    result_file = exp.folder / "result.json"
    result = json.loads(result_file.read_text())
    _add_weight_hashes(exp.folder.parent, exp, result)
    stamp = datetime.datetime.fromtimestamp(result_file.stat().st_mtime, datetime.timezone.utc)
    if not store.save(exp, result, machine=machine, finished=stamp.strftime("%Y-%m-%dT%H:%M:%SZ")):
        return False
    log(f"recorded {exp} -> {repo_relative(store.path(exp))}")
    return True


class _CachedExperiment:
    """A finished experiment read back from its cache folder (kind, label, hash, spec, result)."""

    def __init__(self, folder):
        self.folder = Path(folder)
        self.kind = self.folder.parent.name
        self.label, _, self.hash = self.folder.name.rpartition("-")
        self.spec = json.loads((self.folder / "spec.json").read_text())

    def __repr__(self):
        return f"{self.kind} {self.label} ({self.hash})"


def export_cache(cache_root, records, log=print):
    """Record every finished training of an experiment cache that has no record yet; returns how many
    (the machine recorded is this one: a cache lives on the machine that filled it). Records of the
    cache's trainings written before records kept KD diagnostics get them (:meth:`RunRecords.add_diagnostics`)."""
    store = records if isinstance(records, RunRecords) else RunRecords(records)
    machine = machine_description()
    n = 0
    for kind in RECORDED_KINDS:
        for f in sorted(Path(cache_root, kind).glob("*/result.json")):
            exp = _CachedExperiment(f.parent)
            if store.add_diagnostics(exp):
                log(f"added the KD diagnostics of {exp} to {repo_relative(store.path(exp))}")
            n += _record_cached(store, exp, log, machine)
    return n


def final_checkpoint(folder):
    """The newest ``checkpoint_epoch_N.pth`` under an experiment folder, or None."""
    from pcdet.train_utils.train_utils import checkpoint_epoch, epoch_checkpoints

    found = [c for d in sorted(Path(folder).glob("**/ckpt")) for c in epoch_checkpoints(d)]
    return max(found, key=checkpoint_epoch) if found else None


def _add_weight_hashes(kind_dir, exp, result):
    """``weights_sha1`` of a training and ``teacher_weights_sha1`` of its teacher, from the checkpoints in
    the cache (a result written before they were recorded); left out where a checkpoint is missing."""
    if "weights_sha1" not in result:
        ckpt = final_checkpoint(exp.folder)
        if ckpt is not None:
            result["weights_sha1"] = weights_sha1(ckpt)
    teacher = exp.spec.get("teacher")
    if teacher and "teacher_weights_sha1" not in result:
        folders = list(kind_dir.glob(f"*-{teacher}"))
        ckpt = final_checkpoint(folders[0]) if folders else None
        if ckpt is not None:
            result["teacher_weights_sha1"] = weights_sha1(ckpt)


def teacher_trainings(results):
    """How many distinct teacher weights the results of a row's trainings distilled from (0: none recorded)."""
    return len({r["teacher_weights_sha1"] for r in results if r.get("teacher_weights_sha1")})
