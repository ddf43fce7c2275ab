"""Bird's-eye-view PNG of a few frames: points, ground truth and the predictions of one or more models.

    python tools/visualize.py --cfg_file CFG --pred teacher=RUN_T/eval/epoch_5/val/result.pkl \\
        --pred student=RUN_S/eval/epoch_5/val/result.pkl [--frames 3 | --frame_ids 000010,000042] \\
        [--data_path DIR] [--infos_dir DIR] [--score_thresh 0.3] --out bev.png

``CFG`` names the dataset (its ``DATA_CONFIG``, test split); any model or KD config of that dataset
will do. Each ``--pred NAME=FILE`` is the ``result.pkl`` that ``tools/test.py`` / ``tools/train.py``
write beside ``metrics.json`` (the list of prediction annos with LiDAR ``boxes_lidar``, which every
dataset's ``generate_prediction_dicts`` provides), drawn in its own column, one row per frame. Without
``--pred`` the picture shows the ground truth alone. Drawing: ``pcdet.utils.bev_plot`` (matplotlib,
Agg backend: no display needed).
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pcdet.datasets import build_dataloader  # noqa: E402
from pcdet.train_utils import experiment  # noqa: E402
from pcdet.utils.bev_plot import dataset_frames, load_predictions, plot_bev_grid  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cfg_file", required=True, help="a config of the dataset (its DATA_CONFIG is used)")
    p.add_argument("--pred", action="append", default=[], metavar="NAME=RESULT_PKL",
                   help="predictions of one model (repeat for several models)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--frames", type=int, default=3, help="the first N frames of the split")
    group.add_argument("--frame_ids", default=None, help="comma-separated frame ids")
    p.add_argument("--score_thresh", type=float, default=0.3)
    p.add_argument("--data_path", default=None)
    p.add_argument("--infos_dir", default=None)
    p.add_argument("--title", default=None)
    p.add_argument("--out", required=True, help="PNG to write")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    preds = {}
    for spec in args.pred:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise SystemExit(f"--pred wants NAME=RESULT_PKL, got {spec!r}")
        preds[name] = load_predictions(path)
    cfg = experiment.load_experiment_cfg(args.cfg_file)
    experiment.apply_data_overrides(cfg, args.data_path, args.infos_dir)
    dataset, _, _ = build_dataloader(cfg.DATA_CONFIG, cfg.CLASS_NAMES, 1, False, workers=0, training=False)
    ids = [f.strip() for f in args.frame_ids.split(",") if f.strip()] if args.frame_ids else None
    frames = dataset_frames(dataset, ids, args.frames)
    note = getattr(dataset, "dataset_note", "")
    title = args.title or (f"{note}" if note else None)
    out = plot_bev_grid(frames, preds, args.out, list(cfg.CLASS_NAMES), cfg.DATA_CONFIG.POINT_CLOUD_RANGE,
                        args.score_thresh, title=title)
    print(f"wrote {out} ({len(frames)} frames x {max(1, len(preds))} panels)")
    return out


if __name__ == "__main__":
    main()
