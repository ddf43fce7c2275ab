"""The comparison CSV of a benchmark table: one line per (row, metric), the paper's figure beside ours.

Columns (:data:`FIELDS`): ``table,row,metric,paper,measured,measured_std,n_seeds,unit,dataset,preset,
device,precision,threads,seeds,values,source``. ``paper`` is the paper's figure (an input, empty when
the paper gives none, never zero); ``measured`` is what this run measured, ``measured_std`` its
sample standard deviation over ``n_seeds`` seeds (empty for one seed); ``source`` is the run
directory (several joined by ``;``) that produced the measured value, relative to the repository when
it lies inside it (also when a cache written from another checkout stored it absolute). ``precision`` (``fp32`` /
``bf16``) and ``threads`` say how the trainings behind a value computed (several distinct values
joined by ``;``; empty for measurements that are not trainings). ``seeds`` and ``values`` keep the
per-seed figures behind the mean (same order, joined by ``;``), so that arms can be compared seed by
seed (paired). :func:`cell` refuses a measured value without a source, so no number can reach the
CSV that a run did not produce.
"""
import os

from benchmark.csv_io import write_rows
from benchmark.metrics import metric_unit
from pcdet.utils.paths import repo_relative

FIELDS = ["table", "row", "metric", "paper", "measured", "measured_std", "n_seeds", "unit", "dataset", "preset",
          "device", "precision", "threads", "seeds", "values", "source"]


class MissingSourceError(ValueError):
    """A measured value without the run directory that produced it."""


def _num(value, digits=4):
    if value is None or value == "":
        return ""
    return round(float(value), digits)


def _joined(values):
    """``"bf16"`` / ``"1"`` for one value, ``"bf16;fp32"`` when the runs differ, ``""`` when unknown."""
    if isinstance(values, (list, tuple)):
        return ";".join(dict.fromkeys(str(v) for v in values if v is not None and v != ""))
    return "" if values is None else str(values)


def _provenance(source):
    """Each ``;``-joined path of ``source`` as the CSV records it: an absolute one inside the repository
    made relative to it (:func:`repo_relative`); relative ones (already so) and others unchanged."""
    return ";".join(repo_relative(part) if os.path.isabs(part) else part for part in source.split(";"))


def cell(table, row, metric, *, paper=None, measured=None, measured_std=None, n_seeds=None, dataset="", preset="",
         device="", precision=None, threads=None, seeds=None, values=None, source=None, reference=None):
    """One CSV line as a dict; ``measured`` needs ``source`` (a path or a list of paths). ``reference``:
    the row is a paper reference that is never measured; its reason goes into ``source``."""
    if isinstance(source, (list, tuple)):
        source = ";".join(str(s) for s in source if s)
    source = "" if source is None else _provenance(str(source))
    has_measure = measured is not None and measured != ""
    if has_measure and not source:
        raise MissingSourceError(f"{table} / {row} / {metric}: a measured value ({measured}) needs the run "
                                 f"directory that produced it (source)")
    return {
        "table": table, "row": row, "metric": metric, "paper": _num(paper), "measured": _num(measured),
        "measured_std": _num(measured_std) if has_measure else "", "n_seeds": n_seeds if has_measure else "",
        "unit": metric_unit(metric), "dataset": dataset if has_measure else "", "preset": preset,
        "device": device if has_measure else "", "precision": _joined(precision) if has_measure else "",
        "threads": _joined(threads) if has_measure else "",
        "seeds": ";".join(str(s) for s in seeds) if has_measure and seeds else "",
        "values": ";".join(f"{float(v):.4f}" for v in values) if has_measure and values else "",
        "source": source if has_measure else (f"paper reference: {reference}" if reference else ""),
    }


def write_table_csv(path, rows):
    """Write the lines; every one is re-checked (a hand-built dict cannot slip a sourceless value in)."""
    for r in rows:
        if r.get("measured", "") not in ("", None) and not r.get("source"):
            raise MissingSourceError(f"{r.get('table')} / {r.get('row')} / {r.get('metric')}: measured without source")
    return write_rows(path, rows, FIELDS)
