"""Training hooks: what happens around the epoch loop without widening ``train_model``.

Owns :class:`TrainHook`, :class:`TrainState`, the registry :data:`HOOKS`, :func:`build_hooks` and
the hooks of the package:

* ``periodic_eval`` (``INTERVAL``: every N epochs, default 1; ``LAST``: the last N epochs; the last
  epoch always): evaluates the model on the test split with the evaluation function ``tools/train.py`` provides (results under
  ``eval/epoch_N/<split>``) and logs the table metrics to tensorboard (``eval/<metric>``);
  ``tools/train.py`` then does not evaluate the last epoch a second time;
* ``best_checkpoint`` (``METRIC``, ``MODE`` max/min): after each evaluation, keeps a copy of the
  epoch's checkpoint as ``ckpt/checkpoint_best.pth`` when ``METRIC`` improved, with
  ``ckpt/best.json`` naming the epoch and value (``METRIC``: a table metric of the dataset's
  evaluator such as ``3d_map``, or a key of its metrics dict such as ``Car_3d/moderate_R40``);
* ``kd_weight_warmup`` (``STEPS``): scales every KD loss by ``min(1, (step + 1) / STEPS)`` (a linear
  warm-up from the first step; the model must be a distillation wrapper);
* ``kd_diagnostics`` (``INTERVAL``, default 20 steps): the distillation diagnostics of
  :mod:`pcdet.kd.diagnostics` every ``INTERVAL`` steps (adapter BatchNorm scale / shift, active-ReLU
  fractions, CKA, KD / task gradient ratio, phi mass per class and its effective sample size), in
  tensorboard and appended to ``train_stats.json`` under ``kd_diagnostics`` after every epoch.
  Reading them changes nothing in the training.

Configs list them at the top level::

    HOOKS:
        - {NAME: periodic_eval, INTERVAL: 2}
        - {NAME: best_checkpoint, METRIC: 3d_map}
        - {NAME: kd_weight_warmup, STEPS: 200}

A hook implements any of ``before_train(state)``, ``after_step(state)``, ``after_epoch(state)``;
``state`` (:class:`TrainState`) carries the model, optimizer, scheduler, epoch, iteration,
checkpoint folder, logger, tensorboard writer and the evaluation function, and collects the
metrics of the latest evaluation. Hooks run on rank 0 only where they write files. A new hook
registers with ``@HOOKS.register("name")``.
"""
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from pcdet.config import ConfigError, check_keys
from pcdet.utils.registry import Registry

HOOKS = Registry("hook", "HOOKS[i].NAME: training hooks around the epoch loop")


@dataclass
class TrainState:
    """What hooks see and may use; the epoch loop updates ``epoch`` / ``accumulated_iter``."""

    model: object
    optimizer: object = None
    scheduler: object = None
    total_epochs: int = 0
    epoch: int = 0  # epochs trained so far (1-based after the first epoch)
    accumulated_iter: int = 0
    ckpt_dir: Path = None
    logger: object = None
    tb_log: object = None
    rank: int = 0
    evaluate: object = None  # evaluate(epoch) -> metrics.json dict, provided by tools/train.py
    evaluator_cls: object = None  # the dataset's evaluator class (metric_value)
    last_eval: dict = field(default_factory=dict)  # {"epoch": N, "metrics": {...}}


class TrainHook:
    """Base class: every method is optional."""

    def before_train(self, state):
        pass

    def after_step(self, state):
        pass

    def after_epoch(self, state):
        pass


def run_hooks(hooks, point, state):
    for hook in hooks:
        getattr(hook, point)(state)


@HOOKS.register("periodic_eval")
class PeriodicEval(TrainHook):
    ALLOWED_KEYS = {"NAME", "INTERVAL", "LAST"}

    def __init__(self, cfg, where):
        check_keys(cfg, self.ALLOWED_KEYS, where)
        self.last = int(cfg.get("LAST", 0) or 0)
        self.interval = int(cfg.get("INTERVAL", 0 if self.last else 1) or 0)
        if self.interval < 0 or self.last < 0 or not (self.interval or self.last):
            raise ConfigError(f"{where}: INTERVAL must be >= 1 (or LAST >= 1), got INTERVAL {cfg.get('INTERVAL')}")
        self.history = []  # {"epoch", "metrics"} of every evaluation of this run

    def wants(self, epoch, total):
        return (self.interval and epoch % self.interval == 0) or epoch > total - self.last or epoch >= total

    def after_epoch(self, state):
        if state.rank != 0 or not self.wants(state.epoch, state.total_epochs):
            return
        if state.evaluate is None:  # tools/train.py --no_eval, or a loop run without an evaluation function
            if state.logger is not None and not getattr(self, "_warned", False):
                state.logger.warning("periodic_eval: no evaluation in this run (--no_eval): skipped")
            self._warned = True
            return
        result = state.evaluate(state.epoch)
        state.last_eval = {"epoch": state.epoch, "metrics": result["metrics"]}
        self.history.append(state.last_eval)
        if state.tb_log is not None and state.evaluator_cls is not None:
            for name in state.evaluator_cls.TABLE_METRICS:
                try:
                    state.tb_log.add_scalar(f"eval/{name}", state.evaluator_cls.metric_value(result["metrics"], name),
                                            state.epoch)
                except KeyError:
                    continue


@HOOKS.register("best_checkpoint")
class BestCheckpoint(TrainHook):
    ALLOWED_KEYS = {"NAME", "METRIC", "MODE"}

    def __init__(self, cfg, where):
        check_keys(cfg, self.ALLOWED_KEYS, where)
        if not cfg.get("METRIC", None):
            raise ConfigError(f"{where}: METRIC is required (e.g. 3d_map or Car_3d/moderate_R40)")
        self.metric = str(cfg.METRIC)
        self.mode = str(cfg.get("MODE", "max"))
        if self.mode not in ("max", "min"):
            raise ConfigError(f"{where}: MODE must be max or min, got {self.mode!r}")
        self.best = None
        self._seen_epoch = None

    def value(self, state, metrics):
        if self.metric in metrics:
            return float(metrics[self.metric])
        if state.evaluator_cls is not None:
            try:
                return float(state.evaluator_cls.metric_value(metrics, self.metric))
            except (KeyError, ValueError):
                pass
        raise ConfigError(f"best_checkpoint: METRIC {self.metric!r} is neither a key of the evaluation's metrics nor "
                          f"a table metric of its evaluator")

    def after_epoch(self, state):
        ev = state.last_eval
        if state.rank != 0 or not ev or ev.get("epoch") == self._seen_epoch:
            return
        self._seen_epoch = ev["epoch"]
        value = self.value(state, ev["metrics"])
        better = self.best is None or (value > self.best if self.mode == "max" else value < self.best)
        if not better:
            return
        src = Path(state.ckpt_dir) / f"checkpoint_epoch_{ev['epoch']}.pth"
        if not src.is_file():  # not written at this epoch (--ckpt_save_interval): nothing to keep
            if state.logger is not None:
                state.logger.warning(f"best_checkpoint: {self.metric} = {value:.4f} at epoch {ev['epoch']}, but no "
                                     f"checkpoint of that epoch exists; the best checkpoint is unchanged")
            return
        self.best = value
        shutil.copyfile(src, Path(state.ckpt_dir) / "checkpoint_best.pth")
        (Path(state.ckpt_dir) / "best.json").write_text(
            json.dumps({"metric": self.metric, "mode": self.mode, "value": value, "epoch": ev["epoch"],
                        "checkpoint": src.name}, indent=1) + "\n")
        if state.logger is not None:
            state.logger.info(f"best checkpoint: {self.metric} = {value:.4f} at epoch {ev['epoch']}")


@HOOKS.register("kd_weight_warmup")
class KDWeightWarmup(TrainHook):
    ALLOWED_KEYS = {"NAME", "STEPS"}

    def __init__(self, cfg, where):
        check_keys(cfg, self.ALLOWED_KEYS, where)
        self.steps = int(cfg.get("STEPS", 0))
        if self.steps < 1:
            raise ConfigError(f"{where}: STEPS must be >= 1, got {self.steps}")

    @staticmethod
    def _wrapper(state):
        model = getattr(state.model, "module", state.model)
        if not hasattr(model, "kd_scale"):
            raise ConfigError("kd_weight_warmup: the model is not a distillation wrapper (the config has no KD section)")
        return model

    def _set(self, state):
        self._wrapper(state).kd_scale = min(1.0, (state.accumulated_iter + 1) / self.steps)

    def before_train(self, state):
        self._set(state)

    def after_step(self, state):
        self._set(state)


@HOOKS.register("kd_diagnostics")
class KDDiagnostics(TrainHook):
    ALLOWED_KEYS = {"NAME", "INTERVAL"}

    def __init__(self, cfg, where):
        check_keys(cfg, self.ALLOWED_KEYS, where)
        self.interval = int(cfg.get("INTERVAL", 20))
        if self.interval < 1:
            raise ConfigError(f"{where}: INTERVAL must be >= 1, got {self.interval}")
        self.records, self._last_step = [], None

    def before_train(self, state):
        # counted from the global step, so that a resumed run samples the same steps and records them so
        wrapper = KDWeightWarmup._wrapper(state)
        wrapper.start_diagnostics(self.interval, state.accumulated_iter)

    def after_step(self, state):
        diag = KDWeightWarmup._wrapper(state).last_diagnostics
        if diag and diag.get("step") != self._last_step:
            self._last_step = diag["step"]
            self.records.append(dict(diag, iteration=state.accumulated_iter, epoch=state.epoch + 1))

    def after_epoch(self, state):
        if state.rank != 0 or not self.records or state.ckpt_dir is None:
            return
        path = Path(state.ckpt_dir).parent / "train_stats.json"
        stats = json.loads(path.read_text()) if path.is_file() else {}
        done = {r["iteration"] for r in stats.get("kd_diagnostics", [])}  # a resumed epoch replaces nothing twice
        stats.setdefault("kd_diagnostics", []).extend(r for r in self.records if r["iteration"] not in done)
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(stats, indent=1) + "\n")
        tmp.replace(path)
        self.records = []


def build_hooks(hook_cfgs):
    """The hooks of a config's ``HOOKS`` list, in order."""
    hooks = []
    names = [cfg.get("NAME", None) for cfg in hook_cfgs or []]
    if "best_checkpoint" in names and ("periodic_eval" not in names or
                                       names.index("best_checkpoint") < names.index("periodic_eval")):
        raise ConfigError("HOOKS: best_checkpoint needs a periodic_eval hook listed before it (it ranks its evaluations)")
    for i, cfg in enumerate(hook_cfgs or []):
        where = f"HOOKS[{i}] ({cfg.get('NAME', None)})"
        hooks.append(HOOKS.get(cfg.get("NAME", None), where)(cfg, where))
    return hooks
