"""Evaluate checkpoints: KITTI result files (16th column = score) and ``metrics.json``.

    python tools/test.py --cfg_file tools/cfgs/kitti_models/pointpillar.yaml --ckpt CKPT
    python tools/test.py --cfg_file CFG --eval_all [--ckpt_dir DIR]
    python tools/test.py --cfg_file CFG --ckpt CKPT --set DATA_CONFIG.DATA_PATH other/kitti
    python tools/test.py --cfg_file CFG --ckpt CKPT --data_path READ_ONLY/kitti --infos_dir DIR
        (info pickles written by ``create_kitti_infos --save_path DIR``: the dataset stays untouched)

A KD config (``kd_cfgs/...``) evaluates its student: the network built is the config's ``MODEL``
alone (no teacher is built or loaded) and the student's weights are read from the KD training
checkpoints (``checkpoint_epoch_N.pth``, ``student.*`` keys) or from the exported
``student_epoch_N.pth``; the student's own config takes either as well::

    python tools/test.py --cfg_file kd_cfgs/synthetic/pointpillar_4x_pointdistiller.yaml --ckpt RUN/ckpt/checkpoint_epoch_1.pth
    python tools/test.py --cfg_file kd_cfgs/synthetic/pointpillar_4x_pointdistiller.yaml --eval_all --ckpt_dir RUN/ckpt
    python tools/test.py --cfg_file tools/cfgs/synthetic_models/pointpillar_4x.yaml --ckpt RUN/ckpt/student_epoch_1.pth

Outputs under ``output/<cfg path without extension>/<extra_tag>/eval/epoch_<N>/<split>/``.
"""
import argparse
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pcdet.datasets import build_dataloader  # noqa: E402
from pcdet.kd.wrapper import load_student_weights  # noqa: E402
from pcdet.models import build_network  # noqa: E402
from pcdet.train_utils import experiment  # noqa: E402
from pcdet.train_utils.eval_utils import eval_one_epoch  # noqa: E402
from pcdet.utils.common_utils import create_logger  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cfg_file", required=True)
    p.add_argument("--ckpt", default=None, help="checkpoint to evaluate")
    p.add_argument("--eval_all", action="store_true", help="evaluate every checkpoint_epoch_*.pth in --ckpt_dir")
    p.add_argument("--ckpt_dir", default=None, help="default: <output dir>/ckpt")
    p.add_argument("--batch_size", type=int, default=None)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--extra_tag", default="default")
    p.add_argument("--output_root", default=None)
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--data_path", default=None, help="dataset root (overrides DATA_CONFIG.DATA_PATH)")
    p.add_argument("--infos_dir", default=None,
                   help="folder of the info pickles when they are not in the dataset root")
    p.add_argument("--set", dest="set_cfgs", nargs=argparse.REMAINDER, default=None)
    p.add_argument("--no_progress", action="store_true")
    args = p.parse_args(argv)
    if not args.eval_all and not args.ckpt:
        p.error("give --ckpt or --eval_all")
    return args


def _epoch_of(path):
    m = re.search(r"epoch_(\d+)", Path(path).stem)
    return m.group(1) if m else Path(path).stem


def main(argv=None):
    args = parse_args(argv)
    cfg = experiment.load_experiment_cfg(args.cfg_file, args.set_cfgs)
    experiment.apply_data_overrides(cfg, args.data_path, args.infos_dir)
    device = experiment.resolve_device(args.device)
    out_dir = experiment.output_dir_for(args.cfg_file, args.extra_tag, args.output_root)
    logger = create_logger(name="pcdet.test")
    batch_size = args.batch_size or cfg.OPTIMIZATION.BATCH_SIZE_PER_GPU
    test_set, test_loader, _ = build_dataloader(
        cfg.DATA_CONFIG, cfg.CLASS_NAMES, batch_size, False, workers=args.workers, logger=logger, training=False
    )
    if "KD" in cfg:
        logger.info(f"{args.cfg_file} is a KD config: evaluating its student (MODEL); the teacher is not built")
    model = build_network(cfg.MODEL, len(cfg.CLASS_NAMES), test_set)  # the student alone for a KD config
    model.to(device)
    if args.eval_all:
        ckpt_dir = Path(args.ckpt_dir) if args.ckpt_dir else out_dir / "ckpt"
        ckpts = sorted(ckpt_dir.glob("checkpoint_epoch_*.pth"), key=lambda p: int(_epoch_of(p)))
        if not ckpts:
            raise SystemExit(f"--eval_all: no checkpoint_epoch_*.pth in {ckpt_dir}")
    else:
        ckpts = [Path(args.ckpt)]
    results = {}
    for ckpt in ckpts:
        load_student_weights(model, str(ckpt), logger=logger)
        eval_dir = out_dir / "eval" / f"epoch_{_epoch_of(ckpt)}" / cfg.DATA_CONFIG.DATA_SPLIT["test"]
        results[str(ckpt)] = eval_one_epoch(
            model, test_loader, eval_dir, device, logger=logger, progress=not args.no_progress,
            extra_info={"checkpoint": str(ckpt), "dataset_note": getattr(test_set, "dataset_note", "")},
        )
    return results


if __name__ == "__main__":
    main()
