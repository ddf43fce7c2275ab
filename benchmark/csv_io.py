"""``write_rows``: the one CSV writer of the benchmark scripts (folder created, header = the union of
the rows' keys in first-seen order unless ``fields`` is given)."""
import csv
from pathlib import Path


def write_rows(path, rows, fields=None):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if fields is None:
        fields = []
        for r in rows:
            fields += [k for k in r if k not in fields]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(fields))
        w.writeheader()
        w.writerows(rows)
    return path
