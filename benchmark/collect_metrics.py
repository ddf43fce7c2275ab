"""Collect the KITTI APs of finished runs (their ``metrics.json``) into one CSV.

    python -m benchmark.collect_metrics --metrics RUN/eval/epoch_N/val/metrics.json [...] --csv OUT

One line per (run, class, kind): easy / moderate / hard AP R40, plus the papers' mAP rows (mean of the
three classes' moderate APs). ``source`` is the metrics file each line was read from; the dataset note
the evaluation recorded (for example the embedded synthetic dataset) is copied into ``dataset``.
"""
import argparse
import json
import sys
from pathlib import Path

from pcdet.datasets.kitti.eval import moderate_map
from benchmark.csv_io import write_rows
from pcdet.utils.paths import repo_relative

CLASSES = ("Car", "Pedestrian", "Cyclist")
KINDS = ("bev", "3d")
FIELDS = ["run", "class", "kind", "easy", "moderate", "hard", "dataset", "source"]


def _run_name(path):
    """``.../<experiment>/<tag>/eval/epoch_N/<split>/metrics.json`` -> ``<experiment>/<tag>``."""
    parts = Path(path).resolve().parts
    if "eval" in parts:
        i = len(parts) - 1 - parts[::-1].index("eval")
        return "/".join(parts[max(0, i - 3):i])
    return str(path)


def collect(metrics_files):
    rows = []
    for path in metrics_files:
        data = json.loads(Path(path).read_text())
        m = data["metrics"]
        note = data.get("dataset_note", "")
        name = _run_name(path)
        for kind in KINDS:
            for cls in CLASSES:
                vals = [m[f"{cls}_{kind}/{d}_R40"] for d in ("easy", "moderate", "hard")]
                rows.append({"run": name, "class": cls, "kind": kind, "easy": round(vals[0], 2),
                             "moderate": round(vals[1], 2), "hard": round(vals[2], 2), "dataset": note,
                             "source": repo_relative(path)})
            rows.append({"run": name, "class": "mAP", "kind": kind, "easy": "",
                         "moderate": round(moderate_map(m, kind), 2), "hard": "", "dataset": note,
                         "source": repo_relative(path)})
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--metrics", nargs="+", required=True, help="metrics.json files written by tools/train.py or test.py")
    p.add_argument("--csv", default=None)
    args = p.parse_args(argv)
    rows = collect(args.metrics)
    print(f"{'run':55s} {'class':10s} {'kind':4s} {'easy':>7s} {'mod':>7s} {'hard':>7s}")
    for r in rows:
        print(f"{r['run']:55s} {r['class']:10s} {r['kind']:4s} {str(r['easy']):>7s} {str(r['moderate']):>7s} "
              f"{str(r['hard']):>7s}")
    if args.csv:
        write_rows(args.csv, rows, FIELDS)
    return rows


if __name__ == "__main__":
    main()
    sys.exit(0)
