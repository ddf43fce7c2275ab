"""Generate a whole synthetic dataset into a folder (used by the CLI, tests and benchmarks).

Frames depend only on (seed, frame index), so they can be produced by several worker processes
(``workers > 1``: a spawn pool) with byte-identical results.
"""
import math
import multiprocessing as mp
from pathlib import Path

import numpy as np

from pcdet.datasets.registries import DATASET_WRITERS

from .generator import GENERATOR_VERSION, FrameGenerator
from .writers import get_writer


def split_ids(frames, seed, val_fraction):
    """Deterministic train/val split: ``round(frames * val_fraction)`` random ids go to val."""
    rng = np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(1,)))
    n_val = int(math.floor(frames * val_fraction + 0.5))
    perm = rng.permutation(frames)
    val = np.sort(perm[:n_val])
    train = np.sort(perm[n_val:])
    return train.tolist(), val.tolist()


def validate_args(fmt, frames, seed, val_fraction):
    """Raise ValueError with a clear message for bad generation parameters."""
    DATASET_WRITERS.get(fmt, "format")  # an unknown format fails here, naming the known ones
    if not isinstance(frames, (int, np.integer)) or frames <= 0:
        raise ValueError(f"frames must be a positive integer, got {frames!r}")
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if not (0.0 <= float(val_fraction) <= 1.0) or math.isnan(float(val_fraction)):
        raise ValueError(f"val_fraction must be within [0, 1], got {val_fraction!r}")


def make_manifest(fmt, frames, seed, val_fraction):
    return {"generator": "pcdet.datasets.synthetic", "generator_version": GENERATOR_VERSION, "format": fmt,
            "seed": int(seed), "frames": int(frames), "val_fraction": float(val_fraction)}


_WORKER = {}


def _worker_init(fmt, out_dir, seed):
    _WORKER["gen"] = FrameGenerator(seed)
    _WORKER["writer"] = get_writer(fmt, Path(out_dir))


def _worker_frames(indices):
    for i in indices:
        _WORKER["writer"].write_frame(_WORKER["gen"].generate(i))
    return len(indices)


def generate_dataset(out_dir, frames, seed=0, val_fraction=0.5, fmt="kitti", progress=None, workers=1):
    """Write ``frames`` frames of seed ``seed`` in format ``fmt`` to ``out_dir``; returns the manifest.

    Raises ValueError (``OutputDirError`` for folder conflicts) before anything is written.
    ``workers > 1`` generates frames in that many processes.
    """
    validate_args(fmt, frames, seed, val_fraction)
    if not isinstance(workers, (int, np.integer)) or workers < 1:
        raise ValueError(f"workers must be a positive integer, got {workers!r}")
    manifest = make_manifest(fmt, frames, seed, val_fraction)
    writer = get_writer(fmt, Path(out_dir))
    writer.prepare(manifest)
    if workers == 1:
        gen = FrameGenerator(seed)
        for i in range(frames):
            writer.write_frame(gen.generate(i))
            if progress is not None:
                progress(i + 1, frames)
    else:
        chunk = 8
        batches = [list(range(a, min(a + chunk, frames))) for a in range(0, frames, chunk)]
        done = 0
        with mp.get_context("spawn").Pool(workers, initializer=_worker_init, initargs=(fmt, str(out_dir), seed)) as pool:
            for n in pool.imap_unordered(_worker_frames, batches):
                done += n
                if progress is not None:
                    progress(done, frames)
    train, val = split_ids(frames, seed, val_fraction)
    writer.finalize(manifest, train, val)
    return manifest
