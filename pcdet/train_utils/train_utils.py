"""The epoch loop: seeding, forward/backward, gradient clipping, NaN guard, checkpoints, logging.

The loop only knows ``model(batch_dict) -> ({'loss': loss}, tb_dict, disp_dict)``; a distillation
wrapper is just another model. Everything else that happens during training (periodic evaluation,
the best checkpoint, a KD-weight warm-up) is a hook (:mod:`pcdet.train_utils.hooks`), called
before training, after every step and after every epoch (once its checkpoint is written). Every
epoch starts from RNG states derived from ``(seed, epoch)``,
so a run resumed from the checkpoint of epoch ``e`` replays epochs ``e+1..`` exactly as an
uninterrupted run would.
"""
import glob
import json
import os
import random
import time
from pathlib import Path

import numpy as np
import torch
import tqdm

from pcdet.models import load_data_to_device
from pcdet.train_utils.hooks import TrainState, run_hooks


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN/Inf loss; the message names the step and the last good checkpoint."""


def seed_epoch(seed, epoch, sampler=None, loader=None):
    """Deterministic RNG state for one epoch: python, numpy, torch, the loader's generator
    (shuffling and worker seeds) and a DistributedSampler all derive from ``(seed, epoch)``."""
    s = (int(seed) * 1000003 + int(epoch)) % (2**31)
    random.seed(s)
    np.random.seed(s)
    torch.manual_seed(s)
    if loader is not None and getattr(loader, "generator", None) is not None:
        loader.generator.manual_seed(s)
    if sampler is not None and hasattr(sampler, "set_epoch"):
        sampler.set_epoch(epoch)


def unwrap(model):
    return model.module if hasattr(model, "module") else model


def save_checkpoint_atomic(state, path):
    """Write ``state`` to ``path`` via a temporary file and an atomic rename (no torn checkpoints)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def checkpoint_state(model, optimizer=None, scheduler=None, epoch=None, it=None, extra=None):
    m = unwrap(model)
    state = {
        "model_state": {k: v.detach().cpu() for k, v in m.state_dict().items()},
        "optimizer_state": optimizer.state_dict() if optimizer is not None else None,
        "scheduler_state": scheduler.state_dict() if scheduler is not None else None,
        "epoch": epoch,
        "it": it,
        "rng_state": {
            "python": random.getstate(),
            "numpy": np.random.get_state(),
            "torch": torch.get_rng_state(),
        },
    }
    if extra:
        state.update(extra)
    return state


def load_checkpoint_for_resume(path, model, optimizer, scheduler, logger=None):
    """Restore model, optimizer and scheduler; returns (next_epoch, it)."""
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    for key in ("model_state", "optimizer_state", "scheduler_state", "epoch"):
        if key not in ckpt or ckpt[key] is None:
            raise KeyError(f"{path}: not a resumable training checkpoint (no {key!r})")
    from pcdet.models.model_template import load_model_weights

    load_model_weights(unwrap(model), ckpt["model_state"], str(path))  # strict; legacy step counters ignored
    optimizer.load_state_dict(ckpt["optimizer_state"])
    scheduler.load_state_dict(ckpt["scheduler_state"])
    if logger is not None:
        logger.info(f"resumed from {path} (epoch {ckpt['epoch']}, iteration {ckpt['it']})")
    return int(ckpt["epoch"]) + 1, int(ckpt["it"])


def checkpoint_path(ckpt_dir, epoch):
    """Where the training checkpoint written after ``epoch`` epochs lives: ``ckpt_dir/checkpoint_epoch_N.pth``."""
    return Path(ckpt_dir) / f"checkpoint_epoch_{int(epoch)}.pth"


def checkpoint_epoch(path):
    """N of a ``checkpoint_epoch_N.pth`` (the epochs trained when it was written)."""
    return int(Path(path).stem.rsplit("_", 1)[-1])


def epoch_checkpoints(ckpt_dir):
    """The training checkpoints in ``ckpt_dir``, oldest epoch first (empty when there are none)."""
    return sorted(Path(ckpt_dir).glob("checkpoint_epoch_*.pth"), key=checkpoint_epoch)


def latest_checkpoint(ckpt_dir):
    """Path (as a string) of the newest epoch's checkpoint in ``ckpt_dir``, or None."""
    ckpts = epoch_checkpoints(ckpt_dir)
    return str(ckpts[-1]) if ckpts else None


def train_one_epoch(model, optimizer, loader, scheduler, accumulated_iter, grad_norm_clip, device, epoch,
                    tb_log=None, progress=True, rank=0, last_good_ckpt=None, amp_dtype=None, hooks=(), state=None):
    model.train()
    bar = tqdm.tqdm(total=len(loader), desc=f"epoch {epoch + 1} iterations", leave=False, dynamic_ncols=True,
                    disable=not progress or rank != 0)
    for batch in loader:
        load_data_to_device(batch, device)
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            ret, tb_dict, disp_dict = model(batch)
        loss = ret["loss"].float()
        if not torch.isfinite(loss):
            where = last_good_ckpt if last_good_ckpt else "none written yet"
            raise NonFiniteLossError(
                f"non-finite loss ({loss.item()}) at epoch {epoch}, iteration {accumulated_iter}; "
                f"parts: {tb_dict}; training stopped, last good checkpoint: {where}"
            )
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_norm_clip)
        optimizer.step()
        scheduler.step()
        accumulated_iter += 1
        lr = scheduler.get_last_lr()[0]
        if tb_log is not None and rank == 0:
            tb_log.add_scalar("train/loss", loss.item(), accumulated_iter)
            tb_log.add_scalar("meta_data/learning_rate", lr, accumulated_iter)
            tb_log.add_scalar("train/grad_norm", float(grad_norm), accumulated_iter)
            for key, val in tb_dict.items():
                tb_log.add_scalar("train/" + key, val, accumulated_iter)
        bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{lr:.2e}", refresh=False)  # redraws follow mininterval
        bar.update()
        if hooks:
            state.accumulated_iter = accumulated_iter
            run_hooks(hooks, "after_step", state)
    bar.close()
    return accumulated_iter


TRAIN_STATS_FILE = "train_stats.json"


def _update_stats(path, update):
    path = Path(path)
    stats = json.loads(path.read_text()) if path.is_file() else {"epochs": []}
    update(stats)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(stats, indent=1) + "\n")
    os.replace(tmp, path)


def record_epoch_time(path, epoch, seconds, iterations):
    """Add (or replace, after a resume) epoch ``epoch``'s wall time to ``train_stats.json``.

    ``{"epochs": [{"epoch": 1, "seconds": 41.2, "iterations": 198, "seconds_per_iteration": 0.208}, ...],
    "run": {...}}``; the training-cost benchmark reads it.
    """
    def update(stats):
        entries = [e for e in stats.get("epochs", []) if e.get("epoch") != epoch]
        entries.append({"epoch": epoch, "seconds": round(seconds, 3), "iterations": int(iterations),
                        "seconds_per_iteration": round(seconds / max(1, iterations), 5)})
        stats["epochs"] = sorted(entries, key=lambda e: e["epoch"])

    _update_stats(path, update)


def record_run_info(path, **info):
    """Record how the run computes (``precision`` with its reason, ``threads``, ``device``, ...) under
    ``"run"`` in ``train_stats.json``; a resumed run appends its own entry to ``"resumes"`` when it
    differs, so a mixed-precision or mixed-thread run shows as such."""
    def update(stats):
        if "run" not in stats:
            stats["run"] = info
        elif stats["run"] != info:
            stats.setdefault("resumes", []).append(info)

    _update_stats(path, update)


def train_model(model, optimizer, train_loader, scheduler, start_epoch, total_epochs, start_iter, ckpt_dir, *,
                seed, device, grad_norm_clip, sampler=None, tb_log=None, logger=None, rank=0,
                ckpt_save_interval=1, max_ckpt_save_num=50, progress=True, stop_after_epoch=None, amp_dtype=None,
                hooks=(), state=None):
    """Train epochs ``start_epoch..total_epochs-1``; checkpoint ``checkpoint_epoch_{e+1}.pth`` after each.

    ``hooks`` (:mod:`pcdet.train_utils.hooks`) see ``state`` (a :class:`TrainState`; one is made from
    these arguments when not given). ``stop_after_epoch`` ends the run early (used to simulate an
    interruption in tests).
    """
    hooks = list(hooks)
    if state is None:
        state = TrainState(model=model)
    state.optimizer, state.scheduler, state.total_epochs = optimizer, scheduler, total_epochs
    state.epoch, state.accumulated_iter, state.ckpt_dir = start_epoch, start_iter, Path(ckpt_dir)
    state.logger, state.tb_log, state.rank = logger, tb_log, rank
    run_hooks(hooks, "before_train", state)
    accumulated_iter = start_iter
    last_ckpt = latest_checkpoint(ckpt_dir) if rank == 0 else None
    # the whole run: epochs done, elapsed and ETA (the inner bar shows iterations, loss and lr)
    epochs_bar = tqdm.tqdm(total=total_epochs, initial=start_epoch, desc="epochs", unit="epoch", dynamic_ncols=True,
                           disable=not progress or rank != 0)
    for epoch in range(start_epoch, total_epochs):
        seed_epoch(seed, epoch, sampler, train_loader)
        t_epoch, iter_before = time.perf_counter(), accumulated_iter
        accumulated_iter = train_one_epoch(
            model, optimizer, train_loader, scheduler, accumulated_iter, grad_norm_clip, device, epoch,
            tb_log=tb_log, progress=progress, rank=rank, last_good_ckpt=last_ckpt, amp_dtype=amp_dtype, hooks=hooks,
            state=state,
        )
        trained = epoch + 1
        epochs_bar.update()
        if rank == 0:
            record_epoch_time(Path(ckpt_dir).parent / TRAIN_STATS_FILE, trained, time.perf_counter() - t_epoch,
                              accumulated_iter - iter_before)
        if rank == 0 and (trained % ckpt_save_interval == 0 or trained == total_epochs):
            existing = sorted(glob.glob(str(Path(ckpt_dir) / "checkpoint_epoch_*.pth")), key=os.path.getmtime)
            for old in existing[: max(0, len(existing) - max_ckpt_save_num + 1)]:
                os.remove(old)
            last_ckpt = str(checkpoint_path(ckpt_dir, trained))
            save_checkpoint_atomic(checkpoint_state(model, optimizer, scheduler, epoch, accumulated_iter), last_ckpt)
            export = getattr(unwrap(model), "export_state_dict", None)
            if export is not None:  # e.g. a KD wrapper: the student alone, loadable with the student config
                save_checkpoint_atomic({"model_state": export(), "epoch": epoch},
                                       Path(ckpt_dir) / f"student_epoch_{trained}.pth")
            if logger is not None:
                logger.info(f"epoch {trained}/{total_epochs} done in {time.perf_counter() - t_epoch:.1f} s, "
                            f"checkpoint {last_ckpt}")
        state.epoch, state.accumulated_iter = trained, accumulated_iter
        run_hooks(hooks, "after_epoch", state)
        if stop_after_epoch is not None and trained >= stop_after_epoch:
            break
    epochs_bar.close()
    return accumulated_iter


