"""Experiments of the benchmark harness, cached by a hash of what they resolve to.

An experiment is a dict ``spec`` (JSON-serialisable) naming everything its result depends on: its
kind, the *resolved* config (every ``_BASE_CONFIG_`` merged, so editing a base config changes the
hash), the seed, the epochs, the data, the teacher experiment it distils from. Its directory is
``<cache>/<kind>/<label>-<sha1(spec)[:12]>/`` holding ``spec.json`` and, once finished,
``result.json``. A finished experiment is never run again (a teacher trained once serves every row
and table that names the same teacher); an interrupted training resumes from its newest checkpoint.

Kinds: ``data`` (the embedded synthetic dataset + info pickles), ``train`` (``tools/train.py`` in a
child process, then its final evaluation), ``complexity`` (:mod:`benchmark.complexity`),
``latency`` (:mod:`benchmark.latency`, all models of a table round-robin in one run, so their ratios
come from one run) and ``kd_overhead`` (:mod:`benchmark.kd_overhead`).
"""
import abc
import hashlib
import json
import os
import time
from pathlib import Path

from pcdet.utils.paths import repo_relative


class ExperimentError(RuntimeError):
    """An experiment that failed; the message names its directory and log."""


_rel = repo_relative


def resolved_config(cfg_file):
    """The config as merged by ``load_experiment_cfg``: a plain dict (hashable as JSON)."""
    from pcdet.config import to_plain
    from pcdet.train_utils.experiment import load_experiment_cfg

    return to_plain(load_experiment_cfg(cfg_file), unknown=str)


def metrics_files(run_dir):
    """``{epoch: metrics.json path}`` of every evaluation of a ``tools/train.py`` run (any split name)."""
    found = {}
    for path in (Path(run_dir) / "eval").glob("epoch_*/*/metrics.json"):
        found[int(path.parent.parent.name.split("_")[1])] = path
    return dict(sorted(found.items()))


def final_metrics_file(run_dir):
    """The newest ``eval/epoch_N/<split>/metrics.json`` of a ``tools/train.py`` run (any split name), or None."""
    found = sorted((Path(run_dir) / "eval").glob("epoch_*/*/metrics.json"),
                   key=lambda p: int(p.parent.parent.name.split("_")[1]))
    return found[-1] if found else None


def mean_std(values):
    """Mean and sample standard deviation (ddof 1; None for a single value)."""
    n = len(values)
    mean = sum(values) / n
    std = (sum((v - mean) ** 2 for v in values) / (n - 1)) ** 0.5 if n > 1 else None
    return mean, std


def _headline(result, n=4):
    """A few of a result's final metrics, for a log line."""
    metrics = result.get("metrics") or {}
    nums = [(k, v) for k, v in metrics.items() if isinstance(v, (int, float))][:n]
    return ", ".join(f"{k} {v:.2f}" for k, v in nums) or "-"


def spec_hash(spec):
    return hashlib.sha1(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:12]


class Experiment(abc.ABC):
    """One cached unit of work: ``run()`` returns its result dict (from the cache when finished).

    ``records``: a :class:`benchmark.records.RunRecords` (None: none): a recorded experiment counts as
    finished and its result comes from the record, unless ``rerun_locally`` is set (a recorded teacher
    whose checkpoint a student needs); a finished experiment is recorded."""

    kind = "experiment"

    def __init__(self, cache_root, label, spec, records=None):
        self.label = label
        self.spec = dict(spec, kind=self.kind)
        self.hash = spec_hash(self.spec)
        self.dir = Path(cache_root) / self.kind / f"{label}-{self.hash}"
        self.records = records
        self.rerun_locally = False

    @property
    def result_file(self):
        return self.dir / "result.json"

    def local(self):
        """Finished in this machine's cache (its files are here)."""
        return self.result_file.is_file()

    def recorded(self):
        return self.records is not None and self.records.has(self)

    def cached(self):
        return self.local() or (self.recorded() and not self.rerun_locally)

    def result(self):
        """The record's result where there is one (the first training of this spec stays the reported
        one), else the local cache's."""
        if self.recorded():
            return self.records.result(self)
        return json.loads(self.result_file.read_text())

    def run(self, log=print):
        if self.cached():
            return self.result()
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "spec.json").write_text(json.dumps(self.spec, indent=1, sort_keys=True, default=str) + "\n")
        t0 = time.perf_counter()
        result = self.execute(log)
        result["seconds"] = round(time.perf_counter() - t0, 2)
        result["source"] = _rel(self.dir)
        tmp = self.result_file.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(result, indent=1, default=str) + "\n")
        os.replace(tmp, self.result_file)
        if self.records is not None:
            self._record(result, log)
        return result

    def _record(self, result, log):
        if self.records.save(self, result):
            log(f"recorded {self} -> {_rel(self.records.path(self))}")
        elif self.records.has(self):
            log(f"{self} trained again here (its record keeps the first training): metrics "
                f"{_headline(result)} here, {_headline(self.records.result(self))} recorded")

    @abc.abstractmethod
    def execute(self, log):
        """Do the work (``log`` prints progress) and return the result dict that ``run`` caches."""

    def __repr__(self):
        return f"{self.kind} {self.label} ({self.hash})"


class SyntheticData(Experiment):
    """The embedded synthetic dataset in the layout of the configs' dataset class (its
    ``SYNTHETIC_FORMAT``: the KITTI object layout plus its info pickles and gt database, or the
    SemanticKITTI layout), generated once and cached."""

    kind = "data"

    def __init__(self, cache_root, frames, seed, val_fraction, info_cfg_file):
        from pcdet.datasets import get_dataset_class
        from pcdet.train_utils.experiment import load_experiment_cfg

        cfg = load_experiment_cfg(info_cfg_file)
        self.dataset_cls = get_dataset_class(cfg.DATA_CONFIG.DATASET)
        self.format = self.dataset_cls.SYNTHETIC_FORMAT
        if self.format is None:
            raise ExperimentError(f"{self.dataset_cls.__name__} has no embedded synthetic layout (SYNTHETIC_FORMAT)")
        spec = {"frames": frames, "seed": seed, "val_fraction": val_fraction,
                "data_config": resolved_config(info_cfg_file)["DATA_CONFIG"]}
        label = f"synthetic_{frames}f_seed{seed}"
        if self.format != "kitti":  # the KITTI data keeps the hash and name it always had
            spec["format"], label = self.format, f"synthetic_{self.format}_{frames}f_seed{seed}"
        super().__init__(cache_root, label, spec)
        self.info_cfg_file = info_cfg_file

    @property
    def root(self):
        return self.dir / f"synthetic_{self.format}"

    def execute(self, log):
        from pcdet.datasets.synthetic.build import generate_dataset
        from pcdet.train_utils.experiment import load_experiment_cfg

        log(f"generating the embedded synthetic dataset ({self.format} layout): {self.spec['frames']} frames, "
            f"seed {self.spec['seed']}")
        generate_dataset(self.root, self.spec["frames"], seed=self.spec["seed"], workers=2,
                         val_fraction=self.spec["val_fraction"], fmt=self.format)
        cfg = load_experiment_cfg(self.info_cfg_file)
        summary = self.dataset_cls.prepare_generated(cfg, self.root)
        return {"root": _rel(self.root), "frames": self.spec["frames"], "infos": summary}

    def first_val_frame(self):
        from pcdet.train_utils.experiment import load_experiment_cfg

        return self.dataset_cls.first_val_frame(self.root, load_experiment_cfg(self.info_cfg_file).DATA_CONFIG)


class RealData:
    """A real dataset named by the configs (never generated, never downloaded); ``dataset_cls`` (the
    config's dataset class) says which files must exist and how to get them."""

    def __init__(self, root, dataset_cls, dataset_cfg=None):
        self.root, self.dataset_cls, self.dataset_cfg = Path(root), dataset_cls, dataset_cfg
        self.spec = {"root": _rel(self.root)}

    def check(self):
        missing = [_rel(p) for p in self.dataset_cls.required_files(self.root) if not p.exists()]
        if missing:
            hint = getattr(self.dataset_cls, "SETUP_HINT", "")
            raise ExperimentError(
                f"the paper preset needs the real {self.dataset_cls.FORMAT_NAME} dataset at {_rel(self.root)}; "
                f"missing: {missing}." + (f" {hint}" if hint else ""))
        return self

    def first_val_frame(self):
        return self.dataset_cls.first_val_frame(self.root, self.dataset_cfg)


class Train(Experiment):
    """``tools/train.py`` + its final evaluation. ``teacher``: the Train experiment of the teacher."""

    kind = "train"

    def __init__(self, cache_root, label, cfg_file, seed, epochs, data, device, teacher=None, extra_args=(),
                 threads=None, exclusive=False, gpus=1, records=None, precision=None):
        """``threads``: CPU threads of the child process (torch's ``OMP_NUM_THREADS``/``MKL_NUM_THREADS``
        and numba's ``NUMBA_NUM_THREADS``, which the KD graph kernels use; None: the libraries' defaults).
        It is part of the spec: the thread count changes the order of float sums, so a run with another
        count is another experiment. The harness derives it from the plan (:func:`benchmark.harness.
        assign_threads`), never from what happens to be running. ``exclusive``: the scheduler runs this
        training alone (a teacher that students wait for; a training whose epoch time is measured).
        ``gpus`` > 1 (CUDA): the training runs data-parallel through ``torchrun --nproc_per_node gpus``
        (in the spec then: the batch is split across processes). ``records``: see :class:`Experiment`; the
        result holds ``weights_sha1`` of the final checkpoint and, distilling, ``teacher_weights_sha1``.
        ``precision`` (none / bf16 / auto): overrides the config's ``OPTIMIZATION.MIXED_PRECISION`` and is part
        of the spec (None: the config's own, and no key in the spec, so that older hashes stand). ``auto``
        resolves on the machine that trains, so arms paired across machines should pin ``none`` or ``bf16``."""
        spec = {"cfg_file": _rel(cfg_file), "config": resolved_config(cfg_file), "seed": seed, "epochs": epochs,
                "data": data.spec, "device": device, "teacher": teacher.hash if teacher else None,
                "extra_args": list(extra_args), "threads": threads}
        self.gpus = int(gpus) if device == "cuda" else 1
        if self.gpus > 1:
            spec["gpus"] = self.gpus
        if precision is not None:
            spec["mixed_precision"] = str(precision).lower()
        super().__init__(cache_root, label, spec, records=records)
        self.precision = spec.get("mixed_precision")
        self.cfg_file, self.seed, self.epochs, self.data, self.device = Path(cfg_file), seed, epochs, data, device
        self.teacher, self.extra_args, self.threads, self.exclusive = teacher, list(extra_args), threads, exclusive

    @property
    def run_dir(self):
        from pcdet.train_utils.experiment import output_dir_for

        return output_dir_for(self.cfg_file, f"seed{self.seed}", self.dir)

    def final_ckpt(self):
        from pcdet.train_utils.train_utils import epoch_checkpoints

        ckpts = epoch_checkpoints(self.run_dir / "ckpt")
        if not ckpts:
            raise ExperimentError(f"{self}: no checkpoint in {self.run_dir / 'ckpt'}")
        return ckpts[-1]

    def execute(self, log):
        from pcdet.train_utils.launcher import TrainingFailed, run_training, train_command

        cmd = train_command(self.cfg_file, "--seed", self.seed, "--extra_tag", f"seed{self.seed}", "--output_root",
                            self.dir, "--no_progress", "--device", self.device, "--data_path", self.data.root,
                            *self.extra_args)
        if self.epochs is not None:
            cmd += ["--epochs", str(self.epochs)]
        if self.teacher is not None:
            cmd += ["--teacher_ckpt", str(self.teacher.final_ckpt())]
        if any((self.run_dir / "ckpt").glob("checkpoint_epoch_*.pth")):
            cmd += ["--ckpt", "latest"]
            log(f"resuming {self} from its newest checkpoint")
        if self.gpus > 1:  # data-parallel: torchrun starts one tools/train.py per GPU
            cmd = cmd[:1] + ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(self.gpus)] + \
                cmd[1:] + ["--launcher", "pytorch"]
        if self.precision is not None:
            cmd += ["--mixed_precision", self.precision]
        env = dict(os.environ)
        if self.threads is not None:
            env.update(OMP_NUM_THREADS=str(self.threads), MKL_NUM_THREADS=str(self.threads),
                       NUMBA_NUM_THREADS=str(self.threads))
        logfile = self.dir / "train.log"
        try:
            run_training(cmd, logfile, env=env, tail_lines=15)
        except TrainingFailed as err:
            raise ExperimentError(f"{self}: {err}") from None
        from benchmark.records import weights_sha1
        from pcdet.train_utils.train_utils import epoch_checkpoints

        result = {"run_dir": _rel(self.run_dir), "cfg_file": _rel(self.cfg_file), "seed": self.seed}
        for key, exp in (("weights_sha1", self), ("teacher_weights_sha1", self.teacher)):
            ckpts = epoch_checkpoints(exp.run_dir / "ckpt") if exp is not None else []
            if ckpts:
                result[key] = weights_sha1(ckpts[-1])
        if "--no_eval" not in self.extra_args:
            found = final_metrics_file(self.run_dir)
            if found is None:
                raise ExperimentError(f"{self}: no evaluation in {self.run_dir / 'eval'}; log {_rel(logfile)}")
            data = json.loads(found.read_text())
            result.update(metrics=data["metrics"], dataset=data.get("dataset_note", ""), metrics_file=_rel(found))
            result["metrics_by_epoch"] = {str(e): json.loads(p.read_text())["metrics"]
                                          for e, p in metrics_files(self.run_dir).items()}
        stats = self.run_dir / "train_stats.json"
        if stats.is_file():
            data = json.loads(stats.read_text())
            result["epochs"] = data["epochs"]
            run = data.get("run") or {}
            result["precision"] = (run.get("precision") or {}).get("name")
            result["precision_reason"] = (run.get("precision") or {}).get("reason")
            result["threads"] = run.get("threads")
            result["resumed_differently"] = bool(data.get("resumes"))
        return result


#: how complexity and latency read their frame (part of their hash: a change re-measures them). v2: the
#: dataset class's crop with the file's path (KITTI's camera field of view from the calib beside it)
FRAME_INPUT = "crop_points v2"


class Complexity(Experiment):
    kind = "complexity"
    #: what the result holds (part of the hash: results cached before dense / sparse MACs were kept are
    #: re-measured)
    RESULT = "params, gmacs, gmacs_dense, gmacs_sparse"

    def __init__(self, cache_root, label, cfg_file, frame):
        super().__init__(cache_root, label, {"cfg_file": _rel(cfg_file), "config": resolved_config(cfg_file),
                                             "frame": _rel(frame), "frame_input": FRAME_INPUT,
                                             "result": self.RESULT})
        self.cfg_file, self.frame = cfg_file, frame

    def execute(self, log):
        from benchmark import complexity

        res = complexity.measure(self.cfg_file, self.frame)
        return {"params_m": res["params_M"], "gmacs": res["gmacs"], "gmacs_dense": res["gmacs_dense"],
                "gmacs_sparse": res["gmacs_sparse"], "num_voxels": res["num_voxels"], "frame": _rel(self.frame)}


class Latency(Experiment):
    """Every model of a table in one round-robin run (their ratios come from the same run)."""

    kind = "latency"

    def __init__(self, cache_root, label, cfg_files, frame, device, runs, warmup):
        super().__init__(cache_root, label, {"cfg_files": [_rel(c) for c in cfg_files],
                                             "configs": [resolved_config(c) for c in cfg_files], "frame": _rel(frame),
                                             "frame_input": FRAME_INPUT, "device": device, "runs": runs,
                                             "warmup": warmup})
        self.cfg_files, self.frame, self.device, self.runs, self.warmup = cfg_files, frame, device, runs, warmup

    def execute(self, log):
        from benchmark import latency
        from pcdet.train_utils.experiment import experiment_name

        rows = latency.measure(self.cfg_files, self.frame, device=self.device, runs=self.runs, warmup=self.warmup)
        per_model = {r["model"]: r for r in rows if r["stage"] == "end_to_end"}
        return {"median_ms": {_rel(c): per_model[experiment_name(c)]["median_ms"] for c in self.cfg_files},
                "iqr_ms": {_rel(c): per_model[experiment_name(c)]["iqr_ms"] for c in self.cfg_files}, "rows": rows}


class KDOverhead(Experiment):
    kind = "kd_overhead"

    def __init__(self, cache_root, label, kd_cfg_file, frame, steps, warmup):
        super().__init__(cache_root, label, {"cfg_file": _rel(kd_cfg_file), "config": resolved_config(kd_cfg_file),
                                             "frame": _rel(frame), "steps": steps, "warmup": warmup})
        self.cfg_file, self.frame, self.steps, self.warmup = kd_cfg_file, frame, steps, warmup

    def execute(self, log):
        from benchmark import kd_overhead

        rows = kd_overhead.measure(self.cfg_file, self.frame, steps=self.steps, warmup=self.warmup)
        return {"step_s": {r["variant"]: r["median_s"] for r in rows}, "rows": rows}
