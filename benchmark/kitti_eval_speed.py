"""Speed of the KITTI evaluator (``pcdet.datasets.kitti.eval``) on real labels.

This file owns the benchmark and the result-set perturbation used by it (also exposed as
``tools/make_fake_results.py``): detections are made from the ground-truth labels by jittering
location / size / heading / 2D box, dropping objects, relabelling some Van as Car, and adding false
positives (random ones, ones on DontCare regions and too-small ones), each with a random score.

Run from the repository root::

    python -m benchmark.kitti_eval_speed --n 1000 --out output/bench/kitti_eval_speed.csv

It writes the result set to a temporary folder, then times (a) the numba compile/cache load on a
tiny input, (b) the end-to-end evaluation (reading all label and result files + all classes,
metrics and difficulties) with the kernels already compiled, repeated ``--repeat`` times.
"""
import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from pcdet.utils.object3d_kitti import format_label_line, get_label_anno
from pcdet.utils.paths import realdata_dir
from benchmark.csv_io import write_rows

# typical (h, w, l) per class for random false positives
_FP_SIZE = {"Car": (1.5, 1.6, 3.9), "Pedestrian": (1.75, 0.6, 0.8), "Cyclist": (1.7, 0.6, 1.75)}


def perturb_frame(anno, rng, loc_sigma=0.25, dim_sigma=0.05, rot_sigma=0.1, box_sigma=3.0, p_drop=0.1,
                  p_van_as_car=0.5, p_flip=0.05, fp_rate=1.0, p_dontcare_fp=0.5, p_small_fp=0.1):
    """Detection lines (KITTI result format, with score) for one frame's ground truth ``anno``."""
    lines = []
    names = anno["name"]
    for k in range(len(names)):
        name = str(names[k])
        if name == "DontCare" or rng.random() < p_drop:
            continue
        if name == "Van" and rng.random() < p_van_as_car:
            name = "Car"
        l, h, w = anno["dimensions"][k]
        hwl = np.array([h, w, l]) * (1.0 + dim_sigma * rng.standard_normal(3))
        loc = anno["location"][k] + rng.standard_normal(3) * np.array([loc_sigma, loc_sigma * 0.4, loc_sigma])
        d_rot = rot_sigma * rng.standard_normal() + (np.pi if rng.random() < p_flip else 0.0)
        ry = anno["rotation_y"][k] + d_rot
        alpha = anno["alpha"][k] + d_rot
        bbox = anno["bbox"][k] + box_sigma * rng.standard_normal(4)
        quality = np.exp(-np.abs(rng.standard_normal()))
        score = float(np.clip(0.6 * quality + 0.4 * rng.random(), 0.0, 1.0))
        lines.append(format_label_line(name, 0.0, 0, alpha, bbox, hwl, loc, ry, score))
    for _ in range(rng.poisson(fp_rate)):  # random false positives
        cls = str(rng.choice(list(_FP_SIZE)))
        hwl = np.array(_FP_SIZE[cls]) * (1.0 + 0.1 * rng.standard_normal(3))
        loc = np.array([rng.uniform(-15, 15), rng.uniform(1.2, 2.0), rng.uniform(5, 50)])
        left, top = rng.uniform(0, 1100), rng.uniform(100, 250)
        bbox = [left, top, left + rng.uniform(20, 150), top + rng.uniform(20, 120)]
        ry = rng.uniform(-np.pi, np.pi)
        lines.append(format_label_line(cls, 0.0, 0, ry, bbox, hwl, loc, ry, float(rng.random())))
    for k in np.nonzero(names == "DontCare")[0]:  # detections inside DontCare regions
        if rng.random() < p_dontcare_fp:
            cls = str(rng.choice(list(_FP_SIZE)))
            x1, y1, x2, y2 = anno["bbox"][k]
            bbox = np.array([x1, y1, x2, y2]) + rng.uniform(-2, 2, 4)
            if rng.random() < 0.5:  # enlarge so that the DontCare overlap is only partial
                bbox[2] += (x2 - x1) * rng.uniform(0, 0.8)
            hwl = np.array(_FP_SIZE[cls])
            loc = np.array([rng.uniform(-15, 15), 1.6, rng.uniform(20, 60)])
            lines.append(format_label_line(cls, 0.0, 0, 0.0, bbox, hwl, loc, 0.0, float(rng.random())))
    if rng.random() < p_small_fp:  # too small to count (ignored detection)
        cls = str(rng.choice(list(_FP_SIZE)))
        left, top = rng.uniform(0, 1100), rng.uniform(150, 200)
        bbox = [left, top, left + 15, top + rng.uniform(10, 30)]
        hwl = np.array(_FP_SIZE[cls])
        loc = np.array([rng.uniform(-15, 15), 1.6, rng.uniform(40, 70)])
        lines.append(format_label_line(cls, 0.0, 0, 0.0, bbox, hwl, loc, 0.0, float(rng.random())))
    rng.shuffle(lines)
    return lines


def make_perturbed_results(label_dir, out_dir, ids, seed=0, **kwargs):
    """Write one perturbed result file ``%06d.txt`` per id into ``out_dir``; returns ``out_dir``."""
    rng = np.random.default_rng(seed)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for i in ids:
        anno = get_label_anno(Path(label_dir) / ("%06d.txt" % i), allow_score=False)
        lines = perturb_frame(anno, rng, **kwargs)
        (out_dir / ("%06d.txt" % i)).write_text("".join(ln + "\n" for ln in lines))
    return out_dir


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--label_dir", default=str(realdata_dir() / "kitti_label2_all/training/label_2"))
    parser.add_argument("--n", type=int, default=1000, help="frames 000000 .. n-1")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="output/bench/kitti_eval_speed.csv")
    args = parser.parse_args(argv)
    label_dir = Path(args.label_dir)
    if not label_dir.is_dir():
        raise SystemExit(f"label folder not found: {label_dir} (set PCDET_REALDATA or pass --label_dir)")

    t0 = time.perf_counter()
    from pcdet.datasets.kitti import eval as kitti_eval  # noqa: E402  (import time is part of compile)

    ids = list(range(args.n))
    with tempfile.TemporaryDirectory() as tmp:
        result_dir = make_perturbed_results(label_dir, Path(tmp) / "results", ids, seed=args.seed)
        # compile (or load the numba cache) on a handful of frames
        kitti_eval.evaluate_dirs(label_dir, result_dir, ids[: min(5, len(ids))])
        compile_s = time.perf_counter() - t0
        times = []
        for _ in range(args.repeat):
            t = time.perf_counter()
            result = kitti_eval.evaluate_dirs(label_dir, result_dir, ids)
            times.append(time.perf_counter() - t)
        t = time.perf_counter()
        kitti_eval.load_annos(label_dir, result_dir, ids)
        read_s = time.perf_counter() - t

    row = {
        "frames": args.n,
        "threads": os.cpu_count(),
        "compile_or_cache_load_s": round(compile_s, 3),
        "eval_warm_s_min": round(min(times), 3),
        "eval_warm_s_median": round(float(np.median(times)), 3),
        "read_files_s": round(read_s, 3),
        "car_3d_moderate_R40": round(result["Car_3d/moderate_R40"], 4),
    }
    out = Path(args.out)
    write_rows(out, [row])
    for k, v in row.items():
        print(f"{k}: {v}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
