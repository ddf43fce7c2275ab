"""Train a detector (or a distillation experiment) from a config.

    python tools/train.py --cfg_file tools/cfgs/kitti_models/pointpillar.yaml [--epochs N] [--batch_size B]
    python tools/train.py --cfg_file kd_cfgs/kitti/pointpillar_4x_pointdistiller.yaml --teacher_ckpt T
    torchrun --nproc_per_node 2 tools/train.py --launcher pytorch --cfg_file ...

Outputs under ``output/<cfg path without extension>/<extra_tag>/``: ``ckpt/checkpoint_epoch_N.pth``
(atomic writes), ``tensorboard/``, ``train_<time>.log``, and after training the evaluation of the
last checkpoint under ``eval/``. Works from any current directory.
"""
import argparse
import contextlib
import datetime
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from easydict import EasyDict  # noqa: E402
from tensorboardX import SummaryWriter  # noqa: E402
from tqdm.contrib.logging import logging_redirect_tqdm  # noqa: E402

from pcdet.config import log_config_to_file  # noqa: E402
from pcdet.datasets import build_dataloader  # noqa: E402
from pcdet.datasets.registries import EVALUATORS  # noqa: E402
from pcdet.models import build_network  # noqa: E402
from pcdet.train_utils import experiment  # noqa: E402
from pcdet.train_utils.eval_utils import eval_one_epoch  # noqa: E402
from pcdet.train_utils.hooks import TrainState, build_hooks  # noqa: E402
from pcdet.train_utils.optimization import build_optimizer, build_scheduler  # noqa: E402
from pcdet.train_utils.precision import SETTINGS as PRECISION_SETTINGS  # noqa: E402
from pcdet.train_utils.precision import cpu_features, cpu_model_name, resolve_precision  # noqa: E402
from pcdet.train_utils.train_utils import (  # noqa: E402
    TRAIN_STATS_FILE,
    NonFiniteLossError,
    latest_checkpoint,
    load_checkpoint_for_resume,
    record_run_info,
    train_model,
)
from pcdet.utils.common_utils import create_logger, set_random_seed  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cfg_file", required=True, help="model or KD config")
    p.add_argument("--batch_size", type=int, default=None, help="per process; default OPTIMIZATION.BATCH_SIZE_PER_GPU")
    p.add_argument("--epochs", type=int, default=None, help="default OPTIMIZATION.NUM_EPOCHS")
    p.add_argument("--workers", type=int, default=2, help="dataloader workers")
    p.add_argument("--extra_tag", default="default", help="sub-folder of the output directory")
    p.add_argument("--ckpt", default=None, help="resume from this training checkpoint ('latest' = newest in ckpt/)")
    p.add_argument("--pretrained_model", default=None, help="initialise model weights (no optimizer state)")
    p.add_argument("--teacher_ckpt", default=None, help="teacher weights for a KD config (wins over KD.TEACHER.CKPT)")
    p.add_argument("--set", dest="set_cfgs", nargs=argparse.REMAINDER, default=None, help="KEY VALUE overrides")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data_path", default=None, help="dataset root (overrides DATA_CONFIG.DATA_PATH)")
    p.add_argument("--infos_dir", default=None,
                   help="folder of the info / database pickles when they are not in the dataset root")
    p.add_argument("--launcher", choices=["none", "pytorch"], default="none")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--output_root", default=None, help="default: <repo>/output")
    p.add_argument("--ckpt_save_interval", type=int, default=1)
    p.add_argument("--max_ckpt_save_num", type=int, default=30)
    p.add_argument("--no_eval", action="store_true", help="skip the evaluation after training")
    p.add_argument("--no_progress", action="store_true", help="no tqdm bars")
    p.add_argument("--eval_last", type=int, default=0, metavar="N",
                   help="also evaluate the last N epochs (a periodic_eval hook with LAST: N)")
    p.add_argument("--kd_diagnostics", type=int, default=0, metavar="STEPS",
                   help="KD diagnostics every STEPS steps (a kd_diagnostics hook; KD configs only)")
    p.add_argument("--mixed_precision", choices=PRECISION_SETTINGS, default=None,
                   help="overrides OPTIMIZATION.MIXED_PRECISION (auto resolves on this machine's CPU or GPU)")
    p.add_argument("--stop_after_epoch", type=int, default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    cfg = experiment.load_experiment_cfg(args.cfg_file, args.set_cfgs)
    experiment.apply_data_overrides(cfg, args.data_path, args.infos_dir)
    if args.teacher_ckpt is not None:
        if "KD" not in cfg:
            raise SystemExit(f"--teacher_ckpt given but {args.cfg_file} has no KD section")
        cfg.KD.TEACHER.CKPT = str(Path(args.teacher_ckpt).resolve())
    device = experiment.resolve_device(args.device)
    dist, rank, world = experiment.init_distributed(args.launcher, device)
    optim_cfg = cfg.OPTIMIZATION
    if args.mixed_precision is not None:
        optim_cfg.MIXED_PRECISION = args.mixed_precision
    precision = resolve_precision(optim_cfg, device)  # a bad MIXED_PRECISION fails before any work
    batch_size = args.batch_size or optim_cfg.BATCH_SIZE_PER_GPU
    epochs = args.epochs or optim_cfg.NUM_EPOCHS

    out_dir = experiment.output_dir_for(args.cfg_file, args.extra_tag, args.output_root)
    ckpt_dir = out_dir / "ckpt"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    logger = create_logger(out_dir / f"train_{stamp}.log" if rank == 0 else None, name=f"pcdet.train.{rank}")
    logger.info(f"config {args.cfg_file}; output {out_dir}; device {device}; world size {world}")
    log_config_to_file(cfg, logger)
    set_random_seed(args.seed + rank)

    train_set, train_loader, sampler = build_dataloader(
        cfg.DATA_CONFIG, cfg.CLASS_NAMES, batch_size, dist, workers=args.workers, seed=args.seed + 1000 * rank,
        logger=logger, training=True,
    )
    logger.info(f"dataset: {train_set.dataset_note}")
    model = build_network(cfg.MODEL, len(cfg.CLASS_NAMES), train_set, kd_cfg=cfg.get("KD", None))
    model.to(device)
    if args.pretrained_model:
        model.load_params_from_file(args.pretrained_model, logger=logger)
    optimizer = build_optimizer(model, optim_cfg)
    scheduler = build_scheduler(optimizer, len(train_loader), epochs, optim_cfg)

    start_epoch, start_iter = 0, 0
    if args.ckpt:
        path = latest_checkpoint(ckpt_dir) if args.ckpt == "latest" else args.ckpt
        if path is None:
            raise SystemExit(f"--ckpt latest: no checkpoint in {ckpt_dir}")
        start_epoch, start_iter = load_checkpoint_for_resume(path, model, optimizer, scheduler, logger)

    train_model_obj = model
    if dist:
        train_model_obj = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    tb_log = SummaryWriter(log_dir=str(out_dir / "tensorboard")) if rank == 0 else None
    logger.info(f"training epochs {start_epoch}..{epochs - 1}, {len(train_loader)} iterations per epoch, "
                f"{torch.get_num_threads()} torch threads; precision: {precision}")
    if rank == 0:
        record_run_info(out_dir / TRAIN_STATS_FILE, precision=precision.as_dict(), threads=torch.get_num_threads(),
                        device=str(device), world_size=world,
                        cpu=dict(cpu_features(), model=cpu_model_name()) if device.type == "cpu" else None)
    loaders = {}

    def evaluate(epoch):
        """Evaluate on the test split; results under eval/epoch_<epoch>/<split> (hooks and the final evaluation)."""
        if "test" not in loaders:
            loaders["test"] = build_dataloader(cfg.DATA_CONFIG, cfg.CLASS_NAMES, batch_size, False, workers=args.workers,
                                               logger=logger, training=False)[1]
        test_loader = loaders["test"]
        eval_dir = out_dir / "eval" / f"epoch_{epoch}" / cfg.DATA_CONFIG.DATA_SPLIT["test"]
        return eval_one_epoch(model, test_loader, eval_dir, device, logger=logger, progress=not args.no_progress,
                              extra_info={"dataset_note": test_loader.dataset.dataset_note})

    hook_cfgs = list(cfg.get("HOOKS", None) or [])
    if args.eval_last:
        hook_cfgs = [EasyDict(NAME="periodic_eval", LAST=args.eval_last)] + \
            [h for h in hook_cfgs if h.get("NAME") != "periodic_eval"]
    if args.kd_diagnostics:
        hook_cfgs.append(EasyDict(NAME="kd_diagnostics", INTERVAL=args.kd_diagnostics))
    hooks = build_hooks(hook_cfgs)
    evaluator_cls = EVALUATORS.get(train_set.EVALUATOR) if train_set.EVALUATOR else None
    state = TrainState(model=model, evaluate=evaluate if rank == 0 and not args.no_eval else None,
                       evaluator_cls=evaluator_cls)
    # log lines go through tqdm.write while the bars are drawn, so neither garbles the other
    redirect = logging_redirect_tqdm(loggers=[logger]) if not args.no_progress else contextlib.nullcontext()
    try:
        with redirect:
            train_model(
                train_model_obj, optimizer, train_loader, scheduler, start_epoch, epochs, start_iter, ckpt_dir,
                seed=args.seed, device=device, grad_norm_clip=optim_cfg.get("GRAD_NORM_CLIP", 10.0), sampler=sampler,
                tb_log=tb_log, logger=logger, rank=rank, ckpt_save_interval=args.ckpt_save_interval,
                max_ckpt_save_num=args.max_ckpt_save_num, progress=not args.no_progress,
                stop_after_epoch=args.stop_after_epoch, amp_dtype=precision.autocast_dtype, hooks=hooks, state=state,
            )
    except NonFiniteLossError as err:
        logger.error(str(err))
        raise SystemExit(2) from None
    finally:
        if tb_log is not None:
            tb_log.close()

    evaluated_last = state.last_eval.get("epoch") == epochs  # a periodic_eval hook already did
    if rank == 0 and not args.no_eval and args.stop_after_epoch is None and not evaluated_last:
        evaluate(epochs)
    if dist:
        import torch.distributed as tdist

        tdist.barrier()
        tdist.destroy_process_group()


if __name__ == "__main__":
    main()
