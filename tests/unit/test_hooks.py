"""Training hooks (pcdet.train_utils.hooks) on a stand-in state: evaluation every N epochs, the best
checkpoint by a metric, the KD-weight warm-up, and the config checks."""
import json

import pytest
from easydict import EasyDict

from pcdet.config import ConfigError
from pcdet.train_utils.hooks import TrainState, build_hooks, run_hooks


class Wrapper:
    kd_scale = 1.0


def test_periodic_eval_and_best_checkpoint(tmp_path):
    scores = {1: 10.0, 2: 30.0, 3: 20.0, 4: 25.0}
    calls = []

    def evaluate(epoch):
        calls.append(epoch)
        return {"metrics": {"Car_3d/moderate_R40": scores[epoch]}}

    hooks = build_hooks([EasyDict(NAME="periodic_eval", INTERVAL=2),
                         EasyDict(NAME="best_checkpoint", METRIC="Car_3d/moderate_R40")])
    state = TrainState(model=Wrapper(), evaluate=evaluate, total_epochs=5, ckpt_dir=tmp_path)
    for epoch in range(1, 6):
        (tmp_path / f"checkpoint_epoch_{epoch}.pth").write_text(f"weights of epoch {epoch}")
        scores.setdefault(epoch, 5.0)
        state.epoch = epoch
        run_hooks(hooks, "after_epoch", state)
    assert calls == [2, 4, 5]  # every 2nd epoch and the last one
    best = json.loads((tmp_path / "best.json").read_text())
    assert best["epoch"] == 2 and best["value"] == 30.0
    assert (tmp_path / "checkpoint_best.pth").read_text() == "weights of epoch 2"


def test_periodic_eval_without_an_evaluation_function_skips():
    hooks = build_hooks([EasyDict(NAME="periodic_eval", INTERVAL=1)])
    state = TrainState(model=Wrapper(), evaluate=None, total_epochs=2, epoch=1)
    run_hooks(hooks, "after_epoch", state)  # --no_eval: nothing happens
    assert state.last_eval == {}


def test_kd_weight_warmup_ramps_the_kd_scale():
    hooks = build_hooks([EasyDict(NAME="kd_weight_warmup", STEPS=4)])
    model = Wrapper()
    state = TrainState(model=model)
    run_hooks(hooks, "before_train", state)
    seen = [model.kd_scale]
    for it in range(1, 6):
        state.accumulated_iter = it
        run_hooks(hooks, "after_step", state)
        seen.append(model.kd_scale)
    assert seen == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    with pytest.raises(ConfigError, match="not a distillation wrapper"):
        run_hooks(hooks, "before_train", TrainState(model=object()))


def test_kd_diagnostics_count_from_the_global_step_of_a_resumed_run():
    """A run resumed at global step 2400 samples diagnostics on the steps an uninterrupted run samples
    (2400, 2420, ...; interval 20) and records the global step, in the wrapper and in each method."""
    import torch

    from pcdet.kd.methods.pointdistiller import PointDistiller
    from pcdet.kd.wrapper import DistillationWrapper

    class Method(torch.nn.Module):  # PointDistiller's counters alone
        diagnostics_every, _steps = 0, 0
        start_diagnostics = PointDistiller.start_diagnostics

    wrapper = DistillationWrapper.__new__(DistillationWrapper)  # only its counters matter here
    torch.nn.Module.__init__(wrapper)
    wrapper.kd_methods = torch.nn.ModuleList([Method(), torch.nn.Identity()])
    wrapper.kd_scale = 1.0
    hooks = build_hooks([EasyDict(NAME="kd_diagnostics", INTERVAL=20)])
    run_hooks(hooks, "before_train", TrainState(model=wrapper, accumulated_iter=2400))
    assert wrapper.diagnostics_every == 20 and wrapper._train_steps == 2400
    assert wrapper.kd_methods[0].diagnostics_every == 20 and wrapper.kd_methods[0]._steps == 2400
    assert not hasattr(wrapper.kd_methods[1], "diagnostics_every")


def test_hook_config_errors():
    with pytest.raises(ConfigError, match="needs a periodic_eval hook listed before it"):
        build_hooks([EasyDict(NAME="best_checkpoint", METRIC="x"), EasyDict(NAME="periodic_eval")])
    with pytest.raises(ConfigError, match="INTERVAL must be >= 1"):
        build_hooks([EasyDict(NAME="periodic_eval", INTERVAL=0)])
    with pytest.raises(KeyError, match="unknown hook 'early_stop'; the hook registry knows: best_checkpoint"):
        build_hooks([EasyDict(NAME="early_stop")])
    with pytest.raises(ConfigError, match="unknown config key"):
        build_hooks([EasyDict(NAME="kd_weight_warmup", STEPS=3, EPOCHS=1)])
