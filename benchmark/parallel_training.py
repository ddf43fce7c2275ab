"""Throughput of parallel trainings on CPU: one training with every core against ``--jobs`` trainings
with ``cores // jobs`` torch threads each, all running at once (what ``python -m benchmark run --jobs``
does). Justifies the ``JOBS`` of the presets.

Run from the repository root (the data folder is any KITTI-layout dataset with info pickles, e.g. the
harness's cached synthetic dataset)::

    python -m benchmark.parallel_training --data_path DIR --out output/bench/parallel_training.csv

Each setting trains ``--epochs`` epochs of ``--cfg_file`` without evaluation (``tools/train.py``,
fresh output folders under a scratch directory that is removed afterwards). Measured: the wall time
of the whole setting (process start-up included) and the epoch times that ``train_stats.json``
records; ``throughput_ratio`` = epochs per wall second of the setting / those of the single training.
The CSV records the CPU count and the 1-minute load average, since other work slows every figure.
"""
import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pcdet.utils.paths import REPO_ROOT


def run_setting(cfg_file, data_path, epochs, jobs, threads, scratch):
    """Start ``jobs`` trainings at once with ``threads`` torch threads each; (wall s, [epoch seconds])."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), NUMBA_NUM_THREADS=str(threads))
    procs, outs = [], []
    t0 = time.perf_counter()
    for j in range(jobs):
        out = Path(scratch) / f"jobs{jobs}_{j}"
        cmd = [sys.executable, str(REPO_ROOT / "tools" / "train.py"), "--cfg_file", str(cfg_file), "--epochs",
               str(epochs), "--no_eval", "--no_progress", "--seed", str(j), "--output_root", str(out),
               "--data_path", str(data_path)]
        log = open(Path(scratch) / f"jobs{jobs}_{j}.log", "w")
        procs.append((subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=str(REPO_ROOT), env=env), log))
        outs.append(out)
    for proc, log in procs:
        rc = proc.wait()
        log.close()
        if rc != 0:
            raise SystemExit(f"training failed (exit {rc}); log {log.name}")
    wall = time.perf_counter() - t0
    epoch_s = []
    for out in outs:
        stats = next(out.rglob("train_stats.json"))
        epoch_s += [e["seconds"] for e in json.loads(stats.read_text())["epochs"]]
    return wall, epoch_s


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cfg_file", default=str(REPO_ROOT / "tools" / "cfgs" / "synthetic_models" / "pointpillar_l8.yaml"))
    p.add_argument("--data_path", required=True, help="KITTI-layout dataset with info pickles")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--jobs", type=int, nargs="+", default=[2])
    p.add_argument("--out", required=True, help="CSV file")
    args = p.parse_args(argv)
    cores = os.cpu_count() or 1
    scratch = tempfile.mkdtemp(prefix="parallel_training_", dir=Path(args.out).resolve().parent
                               if Path(args.out).resolve().parent.exists() else None)
    rows = []
    try:
        settings = [(1, cores)] + [(j, max(1, cores // j)) for j in args.jobs if j > 1]
        base = None
        for jobs, threads in settings:
            load = os.getloadavg()[0]
            wall, epoch_s = run_setting(args.cfg_file, args.data_path, args.epochs, jobs, threads, scratch)
            rate = jobs * args.epochs / wall
            base = base or rate
            rows.append({"cfg_file": Path(args.cfg_file).name, "jobs": jobs, "threads_per_job": threads,
                         "epochs_per_job": args.epochs, "wall_s": round(wall, 2),
                         "mean_epoch_s": round(sum(epoch_s) / len(epoch_s), 2),
                         "epochs_per_wall_s": round(rate, 5), "throughput_ratio": round(rate / base, 3),
                         "cpu_count": cores, "loadavg_1min_before": round(load, 2)})
            print(rows[-1])
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
