"""Embedded SemanticKITTI vs a real SemanticKITTI scan: class histogram and points per frame.

    python -m pcdet.datasets.synthetic.seg_stats --synthetic output/synthetic_semantickitti \
        [--real PATH/semantickitti] [--json OUT]

Counts every point of every scan under ``--synthetic`` (``sequences/*/labels``) by learning class
(the official ``learning_map``), and the same for the real scans under ``--real`` (every
``sequences/*/labels/*.label`` there; the repository's sample holds one scan of sequence 00). Prints,
per learning class, the share of points in each (``unlabeled`` = class 0 included in the total),
the points per frame, and the classes the embedded scenes never contain (their IoU is 0 under the
official mIoU, which caps it at ``present / 19``).
"""
import argparse
import json
import sys
from pathlib import Path

import numpy as np

from pcdet.datasets.semantickitti import label_map


def class_histogram(root):
    """``(counts (20,) int64 by learning class, points per scan (list))`` of every labelled scan under ``root``."""
    labels = sorted(Path(root).glob("sequences/*/labels/*.label"))
    if not labels:
        raise FileNotFoundError(f"no sequences/*/labels/*.label under {root}")
    counts = np.zeros(label_map.NUM_CLASSES, dtype=np.int64)
    per_scan = []
    for path in labels:
        sem, _ = label_map.read_label_file(path)
        counts += np.bincount(label_map.to_learning(sem, str(path)), minlength=label_map.NUM_CLASSES)
        per_scan.append(int(len(sem)))
    return counts, per_scan


def compare(synthetic_root, real_root=None):
    """The report as a dict (see the module docstring)."""
    names = ["unlabeled"] + label_map.CLASS_NAMES
    syn, syn_pts = class_histogram(synthetic_root)
    out = {"synthetic": {"root": str(synthetic_root), "scans": len(syn_pts), "points_per_scan": _summary(syn_pts),
                         "share_percent": {n: float(100 * c / max(1, syn.sum())) for n, c in zip(names, syn)}}}
    missing = [n for n, c in zip(names[1:], syn[1:]) if c == 0]
    out["classes_never_in_synthetic"] = missing
    out["official_miou_cap_percent"] = float(100 * (19 - len(missing)) / 19)
    if real_root is not None:
        real, real_pts = class_histogram(real_root)
        out["real"] = {"root": str(real_root), "scans": len(real_pts), "points_per_scan": _summary(real_pts),
                       "share_percent": {n: float(100 * c / max(1, real.sum())) for n, c in zip(names, real)}}
        out["classes_in_real_not_in_synthetic"] = [n for n, a, b in zip(names[1:], syn[1:], real[1:]) if a == 0 and b > 0]
    return out


def _summary(values):
    v = np.asarray(values, dtype=np.float64)
    return {"mean": float(v.mean()), "min": int(v.min()), "max": int(v.max())}


def format_report(rep):
    has_real = "real" in rep
    s = rep["synthetic"]
    lines = [f"embedded SemanticKITTI ({s['scans']} scans): {s['points_per_scan']['mean']:.0f} points per scan "
             f"({s['points_per_scan']['min']}..{s['points_per_scan']['max']})"]
    if has_real:
        r = rep["real"]
        lines.append(f"real SemanticKITTI ({r['scans']} scan(s)): {r['points_per_scan']['mean']:.0f} points per scan")
    lines.append(f"{'class':14s} {'synthetic %':>11s}" + (f" {'real %':>8s}" if has_real else ""))
    for name, share in s["share_percent"].items():
        lines.append(f"{name:14s} {share:11.2f}" + (f" {rep['real']['share_percent'][name]:8.2f}" if has_real else ""))
    lines.append(f"classes the embedded scenes never contain ({len(rep['classes_never_in_synthetic'])} of 19): "
                 f"{', '.join(rep['classes_never_in_synthetic']) or 'none'}; the official mIoU is capped at "
                 f"{rep['official_miou_cap_percent']:.1f}%")
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--synthetic", required=True, help="embedded SemanticKITTI root (sequences/NN/labels)")
    p.add_argument("--real", default=None, help="real SemanticKITTI root (sequences/NN/labels)")
    p.add_argument("--json", default=None, help="write the report as JSON here")
    args = p.parse_args(argv)
    try:
        rep = compare(args.synthetic, args.real)
    except (FileNotFoundError, label_map.LabelFileError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(format_report(rep), end="")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(rep, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
