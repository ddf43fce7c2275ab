"""Optimizers and learning-rate schedules, chosen by ``OPTIMIZATION.OPTIMIZER``.

* ``adamw_onecycle`` (also accepted: ``adam_onecycle``): AdamW with a one-cycle schedule. The
  learning rate rises from ``LR / DIV_FACTOR`` to ``LR`` over the first ``PCT_START`` of the steps
  (cosine), then anneals (cosine) to ``FINAL_LR`` at the last step; beta1 moves from ``MOMS[0]`` to
  ``MOMS[1]`` and back. PointDistiller's setting: LR 1e-3 annealed to 1e-7.
* ``adamw`` / ``adam`` / ``sgd``: constant LR or step decay (``DECAY_STEP_LIST`` epochs, ``LR_DECAY``).

``MIXED_PRECISION`` (``auto`` / ``bf16`` / ``none``) belongs to the same section; it is resolved on
each machine by :mod:`pcdet.train_utils.precision`.

Schedulers are stepped once per iteration and have ``state_dict`` / ``load_state_dict`` so a
resumed run continues exactly where it stopped.
"""
import math

import torch

from pcdet.config import check_keys

OPTIM_KEYS = {
    "BATCH_SIZE_PER_GPU", "NUM_EPOCHS", "OPTIMIZER", "LR", "FINAL_LR", "WEIGHT_DECAY", "MOMENTUM", "MOMS",
    "PCT_START", "DIV_FACTOR", "DECAY_STEP_LIST", "LR_DECAY", "LR_CLIP", "LR_WARMUP", "WARMUP_EPOCH", "GRAD_NORM_CLIP",
    "MIXED_PRECISION",
}


def build_optimizer(model, optim_cfg):
    check_keys(optim_cfg, OPTIM_KEYS, "OPTIMIZATION")
    params = [p for p in model.parameters() if p.requires_grad]
    name = optim_cfg.OPTIMIZER
    wd = optim_cfg.get("WEIGHT_DECAY", 0.0)
    if name in ("adamw_onecycle", "adam_onecycle", "adamw"):
        moms = optim_cfg.get("MOMS", [0.95, 0.85])
        return torch.optim.AdamW(params, lr=optim_cfg.LR, betas=(moms[0], 0.99), weight_decay=wd)
    if name == "adam":
        return torch.optim.Adam(params, lr=optim_cfg.LR, weight_decay=wd)
    if name == "sgd":
        return torch.optim.SGD(params, lr=optim_cfg.LR, weight_decay=wd, momentum=optim_cfg.get("MOMENTUM", 0.9))
    raise ValueError(f"OPTIMIZATION.OPTIMIZER={name!r} is unknown; use adamw_onecycle, adamw, adam or sgd")


def _cos(start, end, frac):
    return end + (start - end) / 2.0 * (1.0 + math.cos(math.pi * frac))


class OneCycle:
    """Per-iteration one-cycle schedule for LR and beta1 (see the module docstring)."""

    def __init__(self, optimizer, total_steps, lr_max, final_lr, div_factor, pct_start, moms):
        self.optimizer = optimizer
        self.total_steps = max(int(total_steps), 1)
        self.lr_max, self.final_lr = lr_max, final_lr
        self.lr_start = lr_max / div_factor
        self.pct_start = pct_start
        self.moms = moms
        self.last_step = -1
        self.step()

    def values(self, step):
        up = max(int(self.pct_start * self.total_steps), 1)
        if step < up:
            f = step / up
            return _cos(self.lr_start, self.lr_max, f), _cos(self.moms[0], self.moms[1], f)
        f = min((step - up) / max(self.total_steps - 1 - up, 1), 1.0)
        return _cos(self.lr_max, self.final_lr, f), _cos(self.moms[1], self.moms[0], f)

    def step(self):
        self.last_step += 1
        lr, mom = self.values(self.last_step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
            if "betas" in group:
                group["betas"] = (mom, group["betas"][1])

    def get_last_lr(self):
        return [g["lr"] for g in self.optimizer.param_groups]

    def state_dict(self):
        return {"last_step": self.last_step, "total_steps": self.total_steps}

    def load_state_dict(self, state):
        if state["total_steps"] != self.total_steps:
            raise ValueError(
                f"scheduler state is for {state['total_steps']} steps but this run has {self.total_steps} "
                "(different epochs / batch size / dataset size than the checkpoint)"
            )
        self.last_step = state["last_step"] - 1
        self.step()


class StepDecay:
    """LR multiplied by LR_DECAY at each epoch of DECAY_STEP_LIST (per-iteration stepping), clipped at LR_CLIP."""

    def __init__(self, optimizer, iters_per_epoch, lr, decay_epochs, decay, lr_clip):
        self.optimizer, self.iters_per_epoch = optimizer, max(iters_per_epoch, 1)
        self.lr, self.decay_epochs, self.decay, self.lr_clip = lr, list(decay_epochs), decay, lr_clip
        self.last_step = -1
        self.step()

    def step(self):
        self.last_step += 1
        epoch = self.last_step / self.iters_per_epoch
        lr = self.lr * self.decay ** sum(1 for e in self.decay_epochs if epoch >= e)
        for group in self.optimizer.param_groups:
            group["lr"] = max(lr, self.lr_clip)

    def get_last_lr(self):
        return [g["lr"] for g in self.optimizer.param_groups]

    def state_dict(self):
        return {"last_step": self.last_step}

    def load_state_dict(self, state):
        self.last_step = state["last_step"] - 1
        self.step()


def build_scheduler(optimizer, total_iters_each_epoch, total_epochs, optim_cfg):
    name = optim_cfg.OPTIMIZER
    if name in ("adamw_onecycle", "adam_onecycle"):
        return OneCycle(
            optimizer,
            total_steps=total_iters_each_epoch * total_epochs,
            lr_max=optim_cfg.LR,
            final_lr=optim_cfg.get("FINAL_LR", optim_cfg.LR / optim_cfg.get("DIV_FACTOR", 10) / 1e4),
            div_factor=optim_cfg.get("DIV_FACTOR", 10),
            pct_start=optim_cfg.get("PCT_START", 0.4),
            moms=optim_cfg.get("MOMS", [0.95, 0.85]),
        )
    return StepDecay(
        optimizer,
        total_iters_each_epoch,
        optim_cfg.LR,
        optim_cfg.get("DECAY_STEP_LIST", []),
        optim_cfg.get("LR_DECAY", 0.1),
        optim_cfg.get("LR_CLIP", 0.0),
    )
