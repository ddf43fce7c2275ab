"""The main job on the embedded synthetic dataset (``make demo``).

    python -m pcdet.demo --out output/demo [--frames 200] [--seed 0]

Today it generates the embedded synthetic dataset in the KITTI layout and prints its label
statistics next to real KITTI's (class mix, object sizes, depth histograms, points per object),
measured by ``pcdet.datasets.synthetic.stats``. Everything printed is about the EMBEDDED
SYNTHETIC dataset, not real KITTI.
"""
import argparse
import json
import sys
import time
from pathlib import Path

import tqdm

from pcdet.datasets.synthetic import stats as synthetic_stats
from pcdet.datasets.synthetic.build import generate_dataset
from pcdet.utils.paths import REPO_ROOT, realdata_dir

BANNER = "[embedded synthetic dataset] "


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(REPO_ROOT / "output" / "demo"))
    p.add_argument("--frames", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args(argv)
    out = Path(args.out)
    data_dir = out / "synthetic_kitti"

    print(f"{BANNER}generating {args.frames} frames (seed {args.seed}) into {data_dir}")
    t0 = time.perf_counter()
    with tqdm.tqdm(total=args.frames, desc="frames", dynamic_ncols=True) as bar:
        def progress(done, total):
            bar.update(done - bar.n)

        generate_dataset(data_dir, args.frames, seed=args.seed, workers=args.workers, progress=progress)
    seconds = time.perf_counter() - t0
    print(f"{BANNER}{args.frames} frames in {seconds:.1f} s ({args.frames / seconds:.1f} frames/s, "
          f"{args.workers} worker processes)")

    real = realdata_dir() / "kitti_label2_all" / "training" / "label_2"
    if not real.is_dir():
        print(f"{BANNER}real KITTI labels not found at {real} (set PCDET_REALDATA): no comparison printed")
        return 0
    res = synthetic_stats.compare(data_dir, real)
    print(f"{BANNER}label statistics, synthetic ({args.frames} frames) vs real KITTI ({real.parent.parent.name}, "
          f"{res.get('real_frames', 'all')} frames):")
    print(synthetic_stats.format_table(res))
    (out / "synthetic_vs_real_kitti.json").write_text(json.dumps(res, indent=1) + "\n")
    print(f"{BANNER}comparison written to {out / 'synthetic_vs_real_kitti.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
