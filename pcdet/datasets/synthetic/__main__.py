"""Command line: ``python -m pcdet.datasets.synthetic --format kitti --out DIR --frames N --seed S``.

Re-running with identical parameters into the same folder regenerates it (byte-identical files);
a folder holding a different dataset is refused with an error naming it.
"""
import argparse
import sys
import time

from .build import generate_dataset
from pcdet.datasets.registries import DATASET_WRITERS

from .writers import OutputDirError


def _fraction(text):
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 <= v <= 1.0:
        raise argparse.ArgumentTypeError(f"val_fraction must be within [0, 1], got {v}")
    return v


def _positive(text):
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"frames must be > 0, got {v}")
    return v


def _seed(text):
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"seed must be >= 0, got {v}")
    return v


def _positive_workers(text):
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"workers must be > 0, got {v}")
    return v


def build_parser():
    p = argparse.ArgumentParser(prog="python -m pcdet.datasets.synthetic",
                                description="Generate the embedded synthetic LiDAR dataset.")
    p.add_argument("--format", default="kitti", choices=DATASET_WRITERS.names(), help="output layout (default: kitti)")
    p.add_argument("--out", required=True, help="output folder (e.g. output/synthetic_kitti)")
    p.add_argument("--frames", type=_positive, required=True, help="number of frames (> 0)")
    p.add_argument("--seed", type=_seed, default=0, help="random seed (>= 0, default 0)")
    p.add_argument("--val_fraction", type=_fraction, default=0.5, help="share of frames in ImageSets/val.txt (default 0.5)")
    p.add_argument("--workers", type=_positive_workers, default=1,
                   help="worker processes (default 1; frames are identical for any number)")
    p.add_argument("--quiet", action="store_true")
    return p


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    t0 = time.time()

    def progress(i, n):
        if not args.quiet and (i == n or i % 100 == 0):
            print(f"  {i}/{n} frames", file=sys.stderr)

    try:
        generate_dataset(args.out, args.frames, args.seed, args.val_fraction, args.format, progress=progress,
                         workers=args.workers)
    except OutputDirError as err:
        parser.error(str(err))
    if not args.quiet:
        print(f"wrote {args.frames} {args.format} frames (seed {args.seed}) to {args.out} in {time.time() - t0:.1f} s")


if __name__ == "__main__":
    main()
