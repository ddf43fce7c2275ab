"""Synthetic-vs-real comparison of label statistics (the dataset's acceptance report).

    python -m pcdet.datasets.synthetic.stats --synthetic DIR --real_label_dir L [--json OUT]

Compares, per class, mean l/w/h (target: within 5 % of real), objects per frame (target: within
25 % relative; required for Car, Pedestrian, Cyclist), the camera-depth histogram (0-70 m, 5 m
bins; target intersection >= 0.8 for Car, Pedestrian, Cyclist) and the share of labelled
Car/Pedestrian/Cyclist objects with a KITTI difficulty that have >= 5 LiDAR points in their box
(target >= 90 %).
"""
import argparse
import json
import sys
from pathlib import Path

import numpy as np

from pcdet.datasets.kitti.kitti_utils import get_difficulty
from pcdet.utils import box_utils
from pcdet.utils.calibration_kitti import Calibration

from .derive_stats import load_label_folder

DIM_TOL = 0.05
FREQ_TOL = 0.25
DEPTH_MIN_INTERSECTION = 0.8
POINTS_MIN = 5
POINTS_MIN_FRACTION = 0.9
REQUIRED = ("Car", "Pedestrian", "Cyclist")
CLASSES = ("Car", "Van", "Truck", "Pedestrian", "Person_sitting", "Cyclist", "Tram", "Misc", "DontCare")
DEPTH_EDGES = np.arange(0.0, 70.0 + 1e-9, 5.0)


def kitti_difficulty(anno):
    """Per object: 0 easy, 1 moderate, 2 hard, -1 none (KITTI's rules; DontCare -> -1)."""
    diff = get_difficulty(anno["bbox"], anno["truncated"], anno["occluded"]).astype(np.int64)
    diff[anno["name"] == "DontCare"] = -1
    return diff


def class_summary(annos):
    n_frames = len(annos)
    out = {}
    for cls in CLASSES:
        masks = [a["name"] == cls for a in annos]
        count = int(sum(m.sum() for m in masks))
        entry = {"count": count, "per_frame": count / max(n_frames, 1)}
        if cls != "DontCare" and count:
            dims = np.concatenate([a["dimensions"][m] for a, m in zip(annos, masks)])  # (l, h, w)
            z = np.concatenate([a["location"][m, 2] for a, m in zip(annos, masks)])
            entry["lwh_mean"] = [float(dims[:, 0].mean()), float(dims[:, 2].mean()), float(dims[:, 1].mean())]
            hist, _ = np.histogram(z, bins=DEPTH_EDGES)
            entry["depth_hist"] = hist.tolist()
        out[cls] = entry
    return n_frames, out


def points_in_labelled_boxes(syn_dir, annos, ids):
    """Per labelled Car/Pedestrian/Cyclist object with a KITTI difficulty: LiDAR points in its box."""
    counts = {c: [] for c in REQUIRED}
    root = Path(syn_dir) / "training"
    for idx, anno in zip(ids, annos):
        diff = kitti_difficulty(anno)
        sel = np.nonzero(np.isin(anno["name"], REQUIRED) & (diff >= 0))[0]
        if len(sel) == 0:
            continue
        calib = Calibration(root / "calib" / f"{idx}.txt")
        pts = np.fromfile(root / "velodyne" / f"{idx}.bin", dtype=np.float32).reshape(-1, 4)[:, :3]
        cam = np.concatenate([anno["location"][sel], anno["dimensions"][sel], anno["rotation_y"][sel, None]], axis=1)
        boxes = box_utils.boxes3d_kitti_camera_to_lidar(cam, calib)
        for k, box in zip(sel, boxes):
            radius = 0.5 * np.linalg.norm(box[3:6]) + 0.01
            near = pts[np.abs(pts[:, :3] - box[:3]).max(axis=1) <= radius]
            n = int(box_utils.points_in_boxes_mask_reference(near, box[None])[0].sum()) if len(near) else 0
            counts[anno["name"][k]].append(n)
    return counts


def _rel(a, b):
    return abs(a - b) / abs(b) if b else float("inf")


def compare(syn_dir, real_label_dir):
    """Comparison dict (see module docstring); ``result["pass"]`` is the overall verdict."""
    syn_dir = Path(syn_dir)
    label_dir = syn_dir / "training" / "label_2"
    syn_files = sorted(label_dir.glob("*.txt")) if label_dir.is_dir() else []
    if not syn_files:
        raise FileNotFoundError(f"no synthetic label files in {label_dir}")
    syn_annos = load_label_folder(label_dir)
    ids = [f.stem for f in syn_files]
    real_annos = load_label_folder(real_label_dir)
    n_syn, syn = class_summary(syn_annos)
    n_real, real = class_summary(real_annos)
    rows = {}
    verdict = True
    for cls in CLASSES:
        s, r = syn[cls], real[cls]
        row = {"real_per_frame": r["per_frame"], "syn_per_frame": s["per_frame"],
               "freq_rel_err": _rel(s["per_frame"], r["per_frame"]), "syn_count": s["count"], "real_count": r["count"]}
        row["freq_pass"] = row["freq_rel_err"] <= FREQ_TOL
        if "lwh_mean" in r:
            row["real_lwh"] = r["lwh_mean"]
            row["syn_lwh"] = s.get("lwh_mean")
            if s.get("lwh_mean"):
                row["dim_rel_err"] = [_rel(a, b) for a, b in zip(s["lwh_mean"], r["lwh_mean"])]
                row["dim_pass"] = max(row["dim_rel_err"]) <= DIM_TOL
                hs = np.array(s["depth_hist"], float)
                hr = np.array(r["depth_hist"], float)
                row["depth_intersection"] = float(np.minimum(hs / max(hs.sum(), 1), hr / max(hr.sum(), 1)).sum())
                row["depth_pass"] = row["depth_intersection"] >= DEPTH_MIN_INTERSECTION
            else:
                row["dim_pass"] = row["depth_pass"] = False
        if cls in REQUIRED:
            verdict &= bool(row["freq_pass"] and row["dim_pass"] and row["depth_pass"])
        rows[cls] = row
    pts = points_in_labelled_boxes(syn_dir, syn_annos, ids)
    all_counts = np.array(sum(pts.values(), []))
    points = {c: {"objects": len(v), "fraction_ge5": float(np.mean(np.array(v) >= POINTS_MIN)) if v else None}
              for c, v in pts.items()}
    frac = float(np.mean(all_counts >= POINTS_MIN)) if len(all_counts) else 0.0
    points["all"] = {"objects": int(len(all_counts)), "fraction_ge5": frac}
    points_pass = frac >= POINTS_MIN_FRACTION
    verdict &= points_pass
    return {"synthetic_dir": str(syn_dir), "real_label_dir": str(real_label_dir), "synthetic_frames": n_syn,
            "real_frames": n_real, "classes": rows, "points_in_box": points, "points_pass": points_pass,
            "targets": {"dim_rel_tol": DIM_TOL, "freq_rel_tol": FREQ_TOL, "depth_min_intersection": DEPTH_MIN_INTERSECTION,
                        "points_min": POINTS_MIN, "points_min_fraction": POINTS_MIN_FRACTION, "required": list(REQUIRED)},
            "pass": bool(verdict)}


def _pf(ok):
    return "PASS" if ok else "FAIL"


def format_table(res):
    lines = [f"synthetic: {res['synthetic_frames']} frames   real: {res['real_frames']} frames",
             "", "class            real l/w/h          synth l/w/h         max err  dims | real/fr synth/fr  err   freq"
             " | depth-int  depth"]
    for cls, row in res["classes"].items():
        freq = (f"{row['real_per_frame']:7.3f} {row['syn_per_frame']:8.3f} {100 * row['freq_rel_err']:5.1f}% "
                f"{_pf(row['freq_pass'])}")
        if "real_lwh" in row:
            rl = "/".join("%.2f" % v for v in row["real_lwh"])
            if row.get("syn_lwh"):
                sl = "/".join("%.2f" % v for v in row["syn_lwh"])
                err = f"{100 * max(row['dim_rel_err']):6.1f}%"
                depth = f"{row['depth_intersection']:9.3f}  {_pf(row['depth_pass'])}"
            else:
                sl, err, depth = "-", "     -", "        -  FAIL"
            tag = _pf(row["dim_pass"])
            lines.append(f"{cls:15s} {rl:19s} {sl:19s} {err}  {tag} | {freq} | {depth}")
        else:
            lines.append(f"{cls:15s} {'-':19s} {'-':19s} {'':7s}  {'':4s} | {freq} |")
    lines.append("")
    lines.append(f"required classes: {', '.join(res['targets']['required'])}; others reported for information")
    p = res["points_in_box"]
    for c in REQUIRED:
        v = p[c]
        fr = "-" if v["fraction_ge5"] is None else "%.1f%%" % (100 * v["fraction_ge5"])
        lines.append(f"  >= {POINTS_MIN} points in box, {c:10s}: {fr} of {v['objects']} objects with a KITTI difficulty")
    lines.append(f"  >= {POINTS_MIN} points in box, all       : {100 * p['all']['fraction_ge5']:.1f}% of "
                 f"{p['all']['objects']}  {_pf(res['points_pass'])}")
    lines.append(f"overall: {_pf(res['pass'])}")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description="Compare synthetic KITTI labels with real KITTI labels.")
    parser.add_argument("--synthetic", required=True, type=Path, help="synthetic dataset folder (KITTI layout)")
    parser.add_argument("--real_label_dir", required=True, type=Path, help="real KITTI training/label_2 folder")
    parser.add_argument("--json", type=Path, default=None, help="also write the comparison as JSON here")
    args = parser.parse_args(argv)
    try:
        res = compare(args.synthetic, args.real_label_dir)
    except FileNotFoundError as err:
        parser.error(str(err))
    print(format_table(res))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res, indent=1) + "\n")
    return 0 if res["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
