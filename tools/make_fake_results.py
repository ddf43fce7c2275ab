"""Make a KITTI result set (label format + score column) by perturbing ground-truth labels.

Useful to exercise ``pcdet.datasets.kitti.eval`` without a trained model. The perturbation
(location / size / heading / 2D-box jitter, dropped objects, Van relabelled as Car, random false
positives, detections on DontCare regions and too-small ones, random scores) is the one defined in
``benchmark.kitti_eval_speed.perturb_frame``; the options below scale it.

    python tools/make_fake_results.py --label_dir L --ids 0-999 --out_dir R [--seed 0]
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmark.kitti_eval_speed import make_perturbed_results  # noqa: E402
from pcdet.datasets.kitti.eval import parse_ids, read_split_file  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--label_dir", required=True)
    parser.add_argument("--out_dir", required=True)
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--ids", help="e.g. 0-999 or 1,5,7-9")
    group.add_argument("--split_file", help="one frame id per line")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--loc_sigma", type=float, default=0.25, help="location noise (m)")
    parser.add_argument("--rot_sigma", type=float, default=0.1, help="heading noise (rad)")
    parser.add_argument("--box_sigma", type=float, default=3.0, help="2D box noise (px)")
    parser.add_argument("--p_drop", type=float, default=0.1, help="probability of dropping an object")
    parser.add_argument("--fp_rate", type=float, default=1.0, help="mean random false positives per frame")
    args = parser.parse_args(argv)
    ids = parse_ids(args.ids) if args.ids is not None else read_split_file(args.split_file)
    make_perturbed_results(args.label_dir, args.out_dir, ids, seed=args.seed, loc_sigma=args.loc_sigma,
                           rot_sigma=args.rot_sigma, box_sigma=args.box_sigma, p_drop=args.p_drop,
                           fp_rate=args.fp_rate)
    print(f"wrote {len(ids)} result files to {args.out_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
