"""Derive the label statistics that drive the synthetic generator from a KITTI ``label_2`` folder.

Run once against the real training labels; the result is the committed data file
``kitti_label_stats.json`` next to this module, so the generator never needs the real data::

    python -m pcdet.datasets.synthetic.derive_stats [--label_dir DIR] [--out FILE]

Stored per class: objects per frame (mean and histogram of counts), mean/std/covariance of
(h, w, l) and a mean-corrected sample of 256 (h, w, l) triplets, histograms of camera depth z (1 m bins),
viewing angle atan2(x, z) (2 degree bins) and
rotation_y (10 degree bins), and the mean occlusion/truncation. DontCare also gets 2D box sizes.
"""
import argparse
import json
from pathlib import Path

import numpy as np

from pcdet.utils.object3d_kitti import KITTI_CLASSES, get_label_anno
from pcdet.utils.paths import realdata_dir

STATS_FILE = Path(__file__).resolve().parent / "kitti_label_stats.json"
DEPTH_EDGES = np.arange(0.0, 91.0, 1.0)
ANGLE_EDGES = np.deg2rad(np.arange(-90.0, 91.0, 2.0))
RY_EDGES = np.deg2rad(np.arange(-180.0, 181.0, 10.0))
MAX_COUNT = 40
DIM_SAMPLES = 256


def default_label_dir():
    return realdata_dir() / "kitti_label2_all" / "training" / "label_2"


def load_label_folder(label_dir):
    """All ``*.txt`` label files of a folder -> list of anno dicts (sorted by file name)."""
    label_dir = Path(label_dir)
    if not label_dir.is_dir():
        raise FileNotFoundError(f"label folder not found: {label_dir}")
    files = sorted(label_dir.glob("*.txt"))
    if not files:
        raise FileNotFoundError(f"no *.txt label files in {label_dir}")
    return [get_label_anno(f) for f in files]


def _dim_samples(hwl, n=DIM_SAMPLES):
    """Up to ``n`` (h, w, l) triplets drawn without replacement, shifted so their mean equals the class mean.

    The generator resamples these, which keeps the joint shape of the real size distribution and
    its mean while storing only a few hundred numbers per class.
    """
    rng = np.random.default_rng(0)
    pick = hwl[rng.choice(len(hwl), size=min(n, len(hwl)), replace=False)]
    pick = pick + (hwl.mean(axis=0) - pick.mean(axis=0))
    return np.round(pick, 3).tolist()


def _hist(values, edges):
    h, _ = np.histogram(np.clip(values, edges[0], edges[-1] - 1e-9), bins=edges)
    return h.astype(int).tolist()


def derive_stats(annos):
    """Statistics dict (JSON-serialisable) of a list of label annos."""
    n_frames = len(annos)
    out = {"n_frames": n_frames, "depth_edges": DEPTH_EDGES.tolist(),
           "angle_edges_deg": np.rad2deg(ANGLE_EDGES).round(6).tolist(),
           "ry_edges_deg": np.rad2deg(RY_EDGES).round(6).tolist(), "classes": {}}
    for cls in KITTI_CLASSES:
        counts = np.array([int((a["name"] == cls).sum()) for a in annos])
        sel = [a for a in annos if (a["name"] == cls).any()]
        entry = {
            "objects_per_frame": float(counts.mean()),
            "total": int(counts.sum()),
            "count_hist": np.bincount(np.minimum(counts, MAX_COUNT), minlength=MAX_COUNT + 1).tolist(),
        }
        if sel:
            masks = [a["name"] == cls for a in sel]
            bbox = np.concatenate([a["bbox"][m] for a, m in zip(sel, masks)])
            entry["bbox_height_mean"] = float((bbox[:, 3] - bbox[:, 1]).mean())
            entry["bbox_width_mean"] = float((bbox[:, 2] - bbox[:, 0]).mean())
            if cls != "DontCare":
                dims = np.concatenate([a["dimensions"][m] for a, m in zip(sel, masks)])  # (l, h, w)
                hwl = dims[:, [1, 2, 0]]
                loc = np.concatenate([a["location"][m] for a, m in zip(sel, masks)])
                ry = np.concatenate([a["rotation_y"][m] for a, m in zip(sel, masks)])
                occ = np.concatenate([a["occluded"][m] for a, m in zip(sel, masks)])
                trunc = np.concatenate([a["truncated"][m] for a, m in zip(sel, masks)])
                entry.update({
                    "hwl_mean": hwl.mean(axis=0).tolist(),
                    "hwl_std": hwl.std(axis=0).tolist(),
                    "hwl_cov": np.cov(hwl.T).tolist() if len(hwl) > 1 else np.zeros((3, 3)).tolist(),
                    "hwl_min": hwl.min(axis=0).tolist(),
                    "hwl_max": hwl.max(axis=0).tolist(),
                    "hwl_samples": _dim_samples(hwl),
                    "depth_hist": _hist(loc[:, 2], DEPTH_EDGES),
                    "angle_hist": _hist(np.arctan2(loc[:, 0], loc[:, 2]), ANGLE_EDGES),
                    "ry_hist": _hist(ry, RY_EDGES),
                    "bottom_y_mean": float(loc[:, 1].mean()),
                    "occlusion_hist": np.bincount(np.clip(occ, 0, 3), minlength=4).tolist(),
                    "truncation_mean": float(trunc.mean()),
                })
        out["classes"][cls] = entry
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--label_dir", type=Path, default=None, help="KITTI label_2 folder (default: real data folder)")
    parser.add_argument("--out", type=Path, default=STATS_FILE, help="output JSON (default: the package's stats file)")
    args = parser.parse_args(argv)
    label_dir = args.label_dir or default_label_dir()
    try:
        annos = load_label_folder(label_dir)
    except FileNotFoundError as err:
        parser.error(str(err))
    stats = derive_stats(annos)
    stats["source"] = "KITTI object training labels (label_2), %d files" % len(annos)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(stats, indent=1, sort_keys=True) + "\n")
    print(f"wrote statistics of {len(annos)} label files to {args.out}")
    for cls, e in stats["classes"].items():
        dims = " ".join("%.2f" % v for v in e.get("hwl_mean", [])) or "-"
        print(f"  {cls:15s} {e['objects_per_frame']:.3f}/frame  hwl {dims}")


if __name__ == "__main__":
    main()
