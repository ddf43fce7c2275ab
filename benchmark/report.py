"""``python -m benchmark report --out DIR``: Markdown summary and plots of the table CSVs in DIR.

Reads every ``DIR/<table id>.csv`` written by ``python -m benchmark run`` and writes
``DIR/report.md`` (per table: the paper's figure beside the measured mean +- std, n seeds, the
dataset and the run directories) and, when the CSVs hold the data for them:

* ``accuracy_vs_gmacs.png``: 3D / BEV mAP against GMACs, measured (filled) and paper (hollow);
* ``latency.png``: measured latency per row (and the paper's, on its own axis: other hardware);
* ``kd_gains.png``: per KD row, mAP minus the mAP of the same student without KD, measured vs paper;
* for methods tables (every non-teacher row trains one student model): the measured ranking beside
  the paper's, with Kendall's tau-b between the two orders.
Nothing is computed here that the CSVs do not hold.
"""
import csv
from collections import OrderedDict
from pathlib import Path

from benchmark import registry


def read_csvs(out):
    tables = OrderedDict()
    for path in sorted(Path(out).glob("*.csv")):
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        if rows and {"table", "row", "metric", "paper", "measured", "source"} <= set(rows[0]):
            tables[path.stem] = rows
    return tables


def _f(x):
    return float(x) if x not in ("", None) else None


def _cell(r):
    m = _f(r["measured"])
    if m is None:
        return ""
    std = _f(r["measured_std"])
    return f"{m:.2f} +- {std:.2f}" if std is not None else f"{m:.2f}"


def _pivot(rows):
    """{row: {metric: csv line}} keeping the CSV's order."""
    out = OrderedDict()
    for r in rows:
        out.setdefault(r["row"], OrderedDict())[r["metric"]] = r
    return out


def markdown(tables):
    lines = ["# Benchmark report", "",
             "Paper figures are the papers' own (inputs); measured figures come from the run directories named",
             "in each CSV's `source` column. mAP = mean of the Car / Pedestrian / Cyclist moderate AP R40.", ""]
    for tid, rows in tables.items():
        notes = sorted({r["dataset"] for r in rows if r["dataset"]})
        presets = sorted({r["preset"] for r in rows if r["preset"]})
        lines += [f"## {tid}", "", f"Preset: {', '.join(presets) or '-'}; dataset: {'; '.join(notes) or '-'}", ""]
        piv = _pivot(rows)
        metrics = list(OrderedDict.fromkeys(m for r in rows for m in [r["metric"]]))
        shown = [m for m in metrics if any(_f(x["measured"]) is not None or _f(x["paper"]) is not None
                                           for x in rows if x["metric"] == m)]
        shown = [m for m in shown if m.split("_")[-1] not in ("easy", "hard")][:8]
        lines.append("| row | " + " | ".join(f"{m} paper | {m} measured" for m in shown) + " | n |")
        lines.append("|---|" + "---|---|" * len(shown) + "---|")
        for name, by_metric in piv.items():
            cells = []
            n = ""
            for m in shown:
                r = by_metric.get(m)
                cells += [r["paper"] if r else "", _cell(r) if r else ""]
                if r and r["n_seeds"]:
                    n = r["n_seeds"]
            lines.append(f"| {name} | " + " | ".join(cells) + f" | {n} |")
        sources = sorted({s for r in rows for s in r["source"].split(";") if s})
        lines += ["", f"{len(sources)} run directories; the CSV lists them per cell.", ""]
    return "\n".join(lines) + "\n"


def _plot_accuracy(tables, path, plt):
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    drawn = False
    for tid, rows in tables.items():
        for name, by in _pivot(rows).items():
            g = by.get("gflops")
            for metric, marker in (("3d_map", "o"), ("bev_map", "s")):
                a = by.get(metric)
                if not (g and a):
                    continue
                if _f(g["measured"]) is not None and _f(a["measured"]) is not None:
                    ax.scatter(_f(g["measured"]), _f(a["measured"]), marker=marker, label=f"{tid}: {name} ({metric})")
                    drawn = True
                if _f(g["paper"]) is not None and _f(a["paper"]) is not None:
                    ax.scatter(_f(g["paper"]), _f(a["paper"]), marker=marker, facecolors="none", edgecolors="gray")
    if not drawn:
        plt.close(fig)
        return None
    ax.set_xlabel("GMACs")
    ax.set_ylabel("mAP (moderate, R40)")
    ax.set_title("accuracy vs compute (filled: measured, hollow gray: paper)")
    ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _plot_latency(tables, path, plt):
    names, meas, paper = [], [], []
    for tid, rows in tables.items():
        for name, by in _pivot(rows).items():
            r = by.get("latency_ms")
            if r and _f(r["measured"]) is not None:
                names.append(f"{tid}: {name}")
                meas.append(_f(r["measured"]))
                paper.append(_f(r["paper"]) or 0.0)
    if not names:
        return None
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 0.5 * len(names) + 2))
    a1.barh(names, meas)
    a1.set_xlabel("measured ms (this machine)")
    a2.barh(names, paper, color="gray")
    a2.set_xlabel("paper ms (2080Ti, TensorRT)")
    a2.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _with_specs(tables, all_tables=None):
    """(table id, its registry entry, {row: {metric: csv line}}) of every CSV table the registry knows."""
    all_tables = all_tables or registry.load_tables(require_all=False)
    for tid, rows in tables.items():
        if tid in all_tables:
            yield tid, all_tables[tid], _pivot(rows)


def kd_gains(tables, all_tables=None):
    """[(table, row, metric, measured gain, paper gain, welch)] of KD rows vs the same MODEL without KD;
    ``welch`` is :func:`welch_t` of the two measured cells (None without a std on both)."""
    gains = []
    for tid, spec, piv in _with_specs(tables, all_tables):
        base = {r["MODEL"]: r["NAME"] for r in spec["ROWS"] if not r.get("KD") and not r.get("TEACHER")}
        for r in spec["ROWS"]:
            if not r.get("KD") or r.get("MODEL") not in base:
                continue
            for metric in ("3d_map", "bev_map"):
                kd_line, ref = piv.get(r["NAME"], {}).get(metric), piv.get(base[r["MODEL"]], {}).get(metric)
                if not kd_line or not ref:
                    continue
                m = (_f(kd_line["measured"]) - _f(ref["measured"])
                     if _f(kd_line["measured"]) is not None and _f(ref["measured"]) is not None else None)
                both = _f(kd_line["paper"]) is not None and _f(ref["paper"]) is not None
                p = _f(kd_line["paper"]) - _f(ref["paper"]) if both else None
                w = welch_t(*(_f(line[k]) for line in (kd_line, ref) for k in ("measured", "measured_std", "n_seeds")))
                if m is not None or p is not None:
                    gains.append((tid, r["NAME"], metric, m, p, w))
    return gains


def welch_t(m1, s1, n1, m0, s0, n0):
    """Welch's unequal-variance t test of mean m1 (sample std s1, n1 seeds) against m0 (s0, n0):
    (t, Welch-Satterthwaite degrees of freedom, two-sided p). None when a std or count is missing,
    either count is below 2, or both stds are zero."""
    if None in (m1, s1, n1, m0, s0, n0) or n1 < 2 or n0 < 2:
        return None
    v1, v0 = s1 * s1 / n1, s0 * s0 / n0
    if v1 + v0 == 0:
        return None
    from scipy import stats

    t = (m1 - m0) / (v1 + v0) ** 0.5
    df = (v1 + v0) ** 2 / (v1 * v1 / (n1 - 1) + v0 * v0 / (n0 - 1))
    return t, df, float(2 * stats.t.sf(abs(t), df))


def kendall_tau_b(xs, ys):
    """Kendall's tau-b of two equally long sequences (ties in either counted as neither concordant nor
    discordant); None when one of them is constant."""
    n = len(xs)
    conc = disc = ties_x = ties_y = 0
    for i in range(n):
        for j in range(i + 1, n):
            dx, dy = xs[i] - xs[j], ys[i] - ys[j]
            if dx == 0 and dy == 0:
                continue
            if dx == 0:
                ties_x += 1
            elif dy == 0:
                ties_y += 1
            elif (dx > 0) == (dy > 0):
                conc += 1
            else:
                disc += 1
    denom = ((conc + disc + ties_x) * (conc + disc + ties_y)) ** 0.5
    return (conc - disc) / denom if denom else None


def method_rankings(tables, all_tables=None):
    """Rankings of the rows of a methods table (every non-teacher row trains the same MODEL), for
    3D and BEV mAP: [(table, metric, [(row, measured, std, measured rank, paper, paper rank)], tau_b)].
    Rows without both a measured and a paper value are left out; ranks are 1 = best."""
    out = []
    for tid, spec, piv in _with_specs(tables, all_tables):
        students = [r for r in spec["ROWS"] if not r.get("TEACHER")]
        if len(students) < 3 or len({r.get("MODEL") for r in students}) != 1:
            continue
        for metric in ("3d_map", "bev_map"):
            entries = []
            for r in students:
                line = piv.get(r["NAME"], {}).get(metric)
                if line and _f(line["measured"]) is not None and _f(line["paper"]) is not None:
                    entries.append((r["NAME"], _f(line["measured"]), _f(line["measured_std"]), _f(line["paper"])))
            if len(entries) < 3:
                continue
            m_rank = {e[0]: 1 + sum(o[1] > e[1] for o in entries) for e in entries}
            p_rank = {e[0]: 1 + sum(o[3] > e[3] for o in entries) for e in entries}
            ranked = sorted(entries, key=lambda e: -e[1])
            tau = kendall_tau_b([e[1] for e in entries], [e[3] for e in entries])
            out.append((tid, metric, [(n, m, sd, m_rank[n], p, p_rank[n]) for n, m, sd, p in ranked], tau))
    return out


def _plot_gains(gains, path, plt):
    gains = [g for g in gains if g[3] is not None]
    if not gains:
        return None
    labels = [f"{g[0]}: {g[1]} ({g[2]})" for g in gains]
    fig, ax = plt.subplots(figsize=(8, 0.4 * len(gains) + 2))
    ys = range(len(gains))
    ax.barh([y + 0.2 for y in ys], [g[3] for g in gains], height=0.4, label="measured")
    ax.barh([y - 0.2 for y in ys], [g[4] or 0.0 for g in gains], height=0.4, color="gray", label="paper")
    ax.set_yticks(list(ys))
    ax.set_yticklabels(labels, fontsize=7)
    ax.axvline(0, color="black", lw=0.8)
    ax.set_xlabel("mAP gain over the same student without KD")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_report(out):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out)
    tables = read_csvs(out)
    if not tables:
        raise SystemExit(f"no benchmark CSVs in {out} (run python -m benchmark run --table ID --out {out} first)")
    text = markdown(tables)
    gains = kd_gains(tables)
    if gains:
        text += ("\n## KD gains (KD row minus the same student without KD)\n\nWelch's t test of the two measured "
                 "rows over their seeds (two-sided p; with 3 seeds a row, p < 0.05 needs |t| of about 2.8 or more)."
                 "\n\n| table | row | metric | measured | Welch t (df) | p | paper |\n|---|---|---|---|---|---|---|\n")
        for t, n, m, g, p, w in gains:
            w_s = "| |" if w is None else f"| {w[0]:+.2f} ({w[1]:.1f}) | {w[2]:.3f} |"
            text += (f"| {t} | {n} | {m} | {'' if g is None else f'{g:+.2f}'} {w_s} "
                     f"{'' if p is None else f'{p:+.2f}'} |\n")
    for t, metric, ranked, tau in method_rankings(tables):
        tau_s = "undefined" if tau is None else f"{tau:+.2f}"
        text += (f"\n## Ranking of methods: {t}, {metric} (measured order; Kendall tau-b against the paper's "
                 f"order: {tau_s})\n\n| measured rank | row | measured | paper rank | paper |\n|---|---|---|---|---|\n")
        for n, m, sd, mr, p, pr in ranked:
            text += f"| {mr} | {n} | {m:.2f}{'' if sd is None else f' +- {sd:.2f}'} | {pr} | {p:.1f} |\n"
    plots = [_plot_accuracy(tables, out / "accuracy_vs_gmacs.png", plt), _plot_latency(tables, out / "latency.png", plt),
             _plot_gains(gains, out / "kd_gains.png", plt)]
    plots = [p for p in plots if p]
    if plots:
        text += "\n" + "\n".join(f"![{p.stem}]({p.name})" for p in plots) + "\n"
    (out / "report.md").write_text(text)
    print(f"[benchmark] wrote {out / 'report.md'} and {len(plots)} plot(s) from {len(tables)} table(s)")
    return out / "report.md"
