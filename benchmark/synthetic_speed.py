"""Speed of the synthetic LiDAR dataset generator (generation + writing KITTI files).

Run from the repository root::

    python -m benchmark.synthetic_speed --frames 200 --out output/bench/synthetic_speed.csv

Measures (a) the numba first-call compile time with an empty numba cache (a fresh cache folder is
used, so the figure does not depend on earlier runs), (b) the first-call time of a new process
when the cache is warm, and (c) steady-state frames/s after warm-up for one process and for
``--workers`` processes (the ray-casting kernel is single-threaded; parallelism is per frame).
Frames are written to a scratch folder beside the CSV, removed afterwards. The CSV also
records the CPU count and the 1-minute load average, since other work on the machine slows it down.
"""
import argparse
import csv
import multiprocessing as mp
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_CHILD_CODE = r"""
import time, sys
t0 = time.perf_counter()
from pcdet.datasets.synthetic.generator import FrameGenerator
t1 = time.perf_counter()
gen = FrameGenerator(0)
gen.generate(0)
t2 = time.perf_counter()
gen.generate(1)
t3 = time.perf_counter()
print("%.6f %.6f %.6f" % (t1 - t0, t2 - t1, t3 - t2))
"""


def first_call_times(cache_dir):
    """(import s, first generate() s, second generate() s) in a fresh process using ``cache_dir``."""
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache_dir))
    out = subprocess.run([sys.executable, "-c", _CHILD_CODE], env=env, capture_output=True, text=True, check=True)
    return tuple(float(v) for v in out.stdout.split()[-3:])


def _bench_worker_init(out_dir, seed):
    from pcdet.datasets.synthetic.generator import FrameGenerator
    from pcdet.datasets.synthetic.writers import get_writer

    global _GEN, _WRITER
    _GEN = FrameGenerator(seed)
    _WRITER = get_writer("kitti", Path(out_dir))


def _bench_worker_frames(indices):
    n_points = 0
    for i in indices:
        frame = _GEN.generate(i)
        _WRITER.write_frame(frame)
        n_points += len(frame["points"])
    return n_points


def _prepared_writer(out_dir, frames):
    from pcdet.datasets.synthetic.build import make_manifest
    from pcdet.datasets.synthetic.writers import get_writer

    writer = get_writer("kitti", Path(out_dir))
    writer.prepare(make_manifest("kitti", frames, 0, 0.5))
    return writer


def time_in_process(out_dir, frames, warmup=3):
    """Seconds for generate + write of ``frames`` frames in this process (after warm-up), points/frame."""
    from pcdet.datasets.synthetic.generator import FrameGenerator

    gen = FrameGenerator(0)
    writer = _prepared_writer(out_dir, frames)
    for i in range(warmup):
        writer.write_frame(gen.generate(10_000 + i))
    n_points = 0
    t0 = time.perf_counter()
    for i in range(frames):
        frame = gen.generate(i)
        writer.write_frame(frame)
        n_points += len(frame["points"])
    dt = time.perf_counter() - t0
    return dt, n_points / frames


def time_workers(out_dir, frames, workers, chunk=4):
    """Seconds for ``frames`` frames with ``workers`` spawn processes (pool warmed up first), points/frame."""
    _prepared_writer(out_dir, frames)
    ctx = mp.get_context("spawn")
    with ctx.Pool(workers, initializer=_bench_worker_init, initargs=(str(out_dir), 0)) as pool:
        pool.map(_bench_worker_frames, [[10_000 + k] for k in range(2 * workers)], chunksize=1)  # warm-up
        batches = [list(range(a, min(a + chunk, frames))) for a in range(0, frames, chunk)]
        t0 = time.perf_counter()
        n_points = sum(pool.imap_unordered(_bench_worker_frames, batches))
        dt = time.perf_counter() - t0
    return dt, n_points / frames


def main(argv=None):
    parser = argparse.ArgumentParser(description="Synthetic dataset generation speed.")
    parser.add_argument("--frames", type=int, default=200, help="frames timed per configuration")
    parser.add_argument("--workers", type=int, default=2, help="processes for the multi-process configuration")
    parser.add_argument("--out", type=Path, default=Path("output/bench/synthetic_speed.csv"), help="CSV to write")
    args = parser.parse_args(argv)
    if args.frames <= 0 or args.workers <= 0:
        parser.error("--frames and --workers must be positive")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="synthetic_speed_", dir=args.out.parent))
    rows = []
    try:
        cold = first_call_times(scratch / "numba_cache")
        warm = first_call_times(scratch / "numba_cache")
        print(f"import {cold[0]:.2f} s; first generate() with empty numba cache {cold[1]:.2f} s (JIT compile), "
              f"with warm cache {warm[1]:.2f} s; next frame {warm[2] * 1000:.1f} ms")
        os.environ["NUMBA_CACHE_DIR"] = str(scratch / "numba_cache")
        dt, pts = time_in_process(scratch / "single", args.frames)
        rows.append(("1 process", 1, dt, pts))
        if args.workers > 1:
            dt, pts = time_workers(scratch / f"workers{args.workers}", args.frames, args.workers)
            rows.append((f"{args.workers} worker processes", args.workers, dt, pts))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    with open(args.out, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["configuration", "processes", "frames", "seconds", "frames_per_s", "points_per_frame",
                    "jit_compile_first_call_s", "warm_cache_first_call_s", "cpu_count", "load_avg_1min"])
        for name, procs, dt, pts in rows:
            w.writerow([name, procs, args.frames, "%.3f" % dt, "%.2f" % (args.frames / dt), "%.0f" % pts,
                        "%.2f" % cold[1], "%.2f" % warm[1], os.cpu_count(), "%.2f" % load])
            print(f"{name:40s} {args.frames / dt:7.2f} frames/s  ({dt:.2f} s for {args.frames} frames, {pts:.0f} points/frame)")
    print(f"load average (1 min) at the end: {load:.2f}; wrote {args.out}")


if __name__ == "__main__":
    main()
