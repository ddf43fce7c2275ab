"""``python -m benchmark report --out DIR``: Markdown summary and plots of the table CSVs in DIR.

Reads every ``DIR/<table id>.csv`` written by ``python -m benchmark run`` and writes
``DIR/report.md`` (per table: the paper's figure beside the measured mean +- std, n seeds, the
dataset and the run directories) and, when the CSVs hold the data for them:

* ``accuracy_vs_compute.png``: per table, 3D / BEV mAP against GMACs, both relative to the table's own
  teacher (measured: filled, paper: hollow; one colour per row), so the embedded data's grid and
  scores are never plotted on the paper's KITTI axes;
* ``latency.png``: measured latency per row (and the paper's, on its own axis: other hardware);
* ``kd_gains.png``: per KD row, mAP (mIoU for segmentation) minus that of the same student without KD, measured vs paper;
* ``forest_<table>.png``: each KD row's gain over the student without KD with its 95% confidence
  interval (paired over seeds when the CSV has per-seed values, Welch otherwise) and the paper's gain;
* for methods tables (every non-teacher row that is not a published reference entry trains one student
  model): the measured ranking beside the paper's, with Kendall's tau-b between the two orders.
Statistics of a KD gain (:func:`gain_statistics`): with per-seed values (the ``seeds`` / ``values``
columns) the paired t test on the seed-matched differences, its 95% confidence interval and p;
Welch's t on the two rows as a secondary test; Holm's step-down correction of the paired p values
across the KD rows of a table (per metric), a row measured by the same runs as another counted once.
Where a table's seed pairs trained on different CPUs (:func:`cpu_pairing`, from the run records or run
directories of each seed), the paired gain is also given over the same-CPU and the cross-CPU pairs.
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


def _teacher_row(tid, all_tables=None):
    all_tables = all_tables or registry.load_tables(require_all=False)
    spec = all_tables.get(tid)
    return next((r["NAME"] for r in spec["ROWS"] if r.get("TEACHER")), None) if spec else None


def _plot_accuracy(tables, path, plt, all_tables=None):
    """3D / BEV mAP against GMACs, each relative to the table's own teacher (measured vs measured
    teacher, paper vs paper teacher); a table without a teacher row or GMACs is left out."""
    fig, ax = plt.subplots(figsize=(7, 5))
    colours = plt.get_cmap("tab20")
    drawn, k = False, 0
    for tid, rows in tables.items():
        piv = _pivot(rows)
        teacher = _teacher_row(tid, all_tables)
        t = piv.get(teacher, {}) if teacher else {}
        for name, by in piv.items():
            if name == teacher or not by.get("gflops"):
                continue
            colour = colours(k % 20)
            k += 1
            for metric, marker in (("3d_map", "o"), ("bev_map", "s")):
                a, g = by.get(metric), by["gflops"]
                ta, tg = t.get(metric), t.get("gflops")
                if not (a and ta and tg):
                    continue
                for col, filled in (("measured", True), ("paper", False)):
                    vals = [_f(x[col]) for x in (a, g, ta, tg)]
                    if None in vals or not vals[2] or not vals[3]:
                        continue
                    ax.scatter(vals[1] / vals[3], vals[0] / vals[2], marker=marker, color=colour if filled else "none",
                               edgecolors=colour, label=f"{tid}: {name} ({metric})" if filled else None)
                    drawn = True
    if not drawn:
        plt.close(fig)
        return None
    ax.axhline(1.0, color="gray", lw=0.6)
    ax.set_xlabel("GMACs / the table's teacher's GMACs")
    ax.set_ylabel("mAP / the table's teacher's mAP")
    ax.set_title("accuracy vs compute relative to each table's teacher (filled: measured, hollow: paper)", fontsize=8)
    ax.legend(fontsize=5, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def _plot_forest(gains, tid, path, plt):
    """Each KD row's gain over the student without KD with its 95% CI, the paper's gain beside it."""
    rows = [g for g in gains if g[0] == tid and g[3] is not None]
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(rows) + 1.5))
    for y, (_, name, metric, gain, paper, welch, pt) in enumerate(rows):
        if pt is not None:  # the seed-matched mean sits inside its own interval (rows may differ in seeds)
            lo, hi = pt["ci"]
            ax.plot([lo, hi], [y, y], color="C0", lw=2)
            gain = pt["mean"]
        ax.plot(gain, y, "o", color="C0", label="measured gain, 95% CI" if y == 0 else None)
        if paper is not None:
            ax.plot(paper, y, "D", color="gray", mfc="none", label="paper's gain" if y == 0 else None)
    ax.axvline(0, color="black", lw=0.8)
    ax.set_yticks(range(len(rows)))
    def label(g):
        seeds = f"{g[6]['n']} paired seeds" if g[6] else "no CI: under 2 paired seeds"
        return f"{g[1]} ({g[2]}, {seeds})"

    ax.set_yticklabels([label(g) for g in rows], fontsize=7)
    ax.set_xlabel("gain over the same student without KD (mAP or mIoU points)")
    ax.set_title(f"{tid}: KD gains (paired over seeds where the CSV has per-seed values)", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")
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
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def _with_specs(tables, all_tables=None):
    """(table id, its registry entry, {row: {metric: csv line}}) of every CSV table the registry knows."""
    all_tables = all_tables or registry.load_tables(require_all=False)
    for tid, rows in tables.items():
        if tid in all_tables:
            yield tid, all_tables[tid], _pivot(rows)


#: the endpoints a KD gain and a method ranking are computed for: detection 3D / BEV mAP, segmentation mIoU
PRIMARY_METRICS = ("3d_map", "bev_map", "miou")


def kd_partners(spec):
    """``[(KD row, the no-KD row of its MODEL)]`` of a table's registry entry, in row order: the KD rows
    a gain is computed for (a row without ``KD`` that is not the ``TEACHER`` is its MODEL's reference)."""
    base = {r["MODEL"]: r["NAME"] for r in spec["ROWS"] if not r.get("KD") and not r.get("TEACHER")}
    return [(r["NAME"], base[r["MODEL"]]) for r in spec["ROWS"] if r.get("KD") and r.get("MODEL") in base]


def partner_cells(piv, partners):
    """``(KD row, metric, its CSV line, the no-KD row's line)`` for each pair of :func:`kd_partners` and
    each of :data:`PRIMARY_METRICS` where both rows have a cell (KD row order, then metric order)."""
    for row, ref_row in partners:
        for metric in PRIMARY_METRICS:
            kd_line, ref = piv.get(row, {}).get(metric), piv.get(ref_row, {}).get(metric)
            if kd_line and ref:
                yield row, metric, kd_line, ref


def kd_gains(tables, all_tables=None):
    """[(table, row, metric, measured gain, paper gain, welch, paired)] of KD rows vs the same MODEL without
    KD; ``welch`` is :func:`welch_t` of the two measured cells (None without a std on both), ``paired``
    the :func:`paired_t` dict of their per-seed values (None without them) with ``p_holm``, Holm's
    correction across the KD rows of the table for that metric."""
    gains, pivots = [], {}
    for tid, spec, piv in _with_specs(tables, all_tables):
        pivots[tid] = piv
        for row, metric, kd_line, ref in partner_cells(piv, kd_partners(spec)):
            m = (_f(kd_line["measured"]) - _f(ref["measured"])
                 if _f(kd_line["measured"]) is not None and _f(ref["measured"]) is not None else None)
            both = _f(kd_line["paper"]) is not None and _f(ref["paper"]) is not None
            p = _f(kd_line["paper"]) - _f(ref["paper"]) if both else None
            w = welch_t(*(_f(line[k]) for line in (kd_line, ref) for k in ("measured", "measured_std", "n_seeds")))
            pt = paired_t(per_seed(kd_line), per_seed(ref))
            if m is not None or p is not None:
                gains.append((tid, row, metric, m, p, w, pt))
    for tid in dict.fromkeys(g[0] for g in gains):
        for metric in PRIMARY_METRICS:
            group = [g for g in gains if g[0] == tid and g[2] == metric and g[6] is not None]
            # a row measured by the same runs as an earlier one is the same comparison: counted once
            same = same_runs_as(pivots[tid], [g[1] for g in group], metric)
            distinct = [g for g in group if g[1] not in same]
            for g, adj in zip(distinct, holm([g[6]["p"] for g in distinct])):
                g[6]["p_holm"] = adj
            for g in group:
                if g[1] in same:
                    g[6]["p_holm"] = next(o[6]["p_holm"] for o in distinct if o[1] == same[g[1]])
    return gains


def same_runs_as(piv, names, metric):
    """``{row: earlier row}`` for the rows of ``names`` (in order) whose ``metric`` cell names exactly the
    same run directories (``source``) as an earlier row's: such rows repeat one measurement under another
    paper figure (e.g. a paper row with test-time augmentation that a plain config does not reproduce)."""
    first, same = {}, {}
    for name in names:
        source = (piv.get(name, {}).get(metric) or {}).get("source") or ""
        if not source:
            continue
        if source in first:
            same[name] = first[source]
        else:
            first[source] = name
    return same


def per_seed(line):
    """``{seed: value}`` of a CSV line with the ``seeds`` / ``values`` columns (``{}`` without them)."""
    seeds, values = (line.get("seeds") or ""), (line.get("values") or "")
    if not seeds or not values:
        return {}
    return {int(s): float(v) for s, v in zip(seeds.split(";"), values.split(";"))}


def paired_t(kd, ref):
    """Paired t test of per-seed values ``kd`` against ``ref`` (``{seed: value}``) on the seeds both have:
    dict with n, mean difference, its sample std, t, df, two-sided p and the 95% confidence interval;
    None with fewer than 2 common seeds. A zero spread of the differences gives t = +-inf (p = 0) or,
    for identical arms, t = 0 (p = 1)."""
    from scipy import stats

    common = sorted(set(kd) & set(ref))
    if len(common) < 2:
        return None
    d = [kd[s] - ref[s] for s in common]
    n = len(d)
    mean = sum(d) / n
    sd = (sum((x - mean) ** 2 for x in d) / (n - 1)) ** 0.5
    se = sd / n ** 0.5
    df = n - 1
    if se == 0:
        t, p = (0.0, 1.0) if mean == 0 else (float("inf") if mean > 0 else float("-inf"), 0.0)
    else:
        t = mean / se
        p = float(2 * stats.t.sf(abs(t), df))
    half = float(stats.t.ppf(0.975, df)) * se
    return {"n": n, "mean": mean, "sd": sd, "t": t, "df": df, "p": p, "ci": (mean - half, mean + half)}


def holm(pvalues):
    """Holm's step-down adjusted p values (same order as given; None entries are left out and kept None)."""
    idx = [i for i, p in enumerate(pvalues) if p is not None]
    order = sorted(idx, key=lambda i: pvalues[i])
    m = len(order)
    adjusted, running = [None] * len(pvalues), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


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
    3D and BEV mAP and mIoU (:data:`PRIMARY_METRICS`):
    [(table, metric, [(row, measured, std, measured rank, paper, paper rank)], tau_b)].
    Rows without both a measured and a paper value are left out, so are reference rows (published
    entries of other architectures, ``REFERENCE``) and rows measured by the same runs as an earlier row
    (:func:`same_runs_as`); ranks are 1 = best."""
    out = []
    for tid, spec, piv in _with_specs(tables, all_tables):
        students = [r for r in spec["ROWS"] if not r.get("TEACHER") and not r.get("REFERENCE")]
        if len(students) < 3 or len({r.get("MODEL") for r in students}) != 1:
            continue
        for metric in PRIMARY_METRICS:
            entries = []
            same = same_runs_as(piv, [r["NAME"] for r in students], metric)
            for r in students:
                if r["NAME"] in same:
                    continue
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
    ax.barh([y + 0.2 for y in ys], [g[3] for g in gains], height=0.4,
            label="measured (difference of the rows' means over all their seeds)")
    ax.barh([y - 0.2 for y in ys], [g[4] or 0.0 for g in gains], height=0.4, color="gray", label="paper")
    ax.set_yticks(list(ys))
    ax.set_yticklabels(labels, fontsize=7)
    ax.axvline(0, color="black", lw=0.8)
    ax.set_xlabel("gain over the same student without KD (mAP or mIoU points)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


CLASS_METRICS = [f"{k}_{c}_moderate" for k in ("bev", "3d") for c in ("car", "ped", "cyc")]
FLOOR_AP = 10.0  # a class whose no-KD student is below this moderate AP is flagged: KD cannot move a floor


def gate_text(tables, all_tables=None):
    """Per table with a teacher row and a no-KD row carrying per-class APs: the teacher gate (teacher
    minus no-KD student, moderate AP per class) against the preset's ``GATE.MIN_GAP``, and the classes
    where the no-KD student is below ``FLOOR_AP`` (flagged)."""
    all_tables = all_tables or registry.load_tables(require_all=False)
    presets = registry.load_presets()
    text = ""
    for tid, spec, piv in _with_specs(tables, all_tables):
        teacher = next((r["NAME"] for r in spec["ROWS"] if r.get("TEACHER")), None)
        nokd = next((r["NAME"] for r in spec["ROWS"] if not r.get("KD") and not r.get("TEACHER")), None)
        if not teacher or not nokd or not any(_f(piv.get(teacher, {}).get(m, {}).get("measured")) is not None
                                              for m in CLASS_METRICS if piv.get(teacher, {}).get(m)):
            continue
        preset = next((r["preset"] for r in tables[tid] if r["preset"]), "")
        gap_min = float((presets.get(preset, {}).get("GATE") or {}).get("MIN_GAP", 5.0))
        text += (f"\n## Teacher gate: {tid} (teacher minus the no-KD student, moderate AP; gate {gap_min:g})\n\n"
                 "| class metric | teacher | no-KD student | gap | flag |\n|---|---|---|---|---|\n")
        for m in CLASS_METRICS:
            t, s = piv.get(teacher, {}).get(m), piv.get(nokd, {}).get(m)
            tv, sv = (_f(t["measured"]) if t else None), (_f(s["measured"]) if s else None)
            if tv is None or sv is None:
                continue
            flags = ([f"gap below {gap_min:g}"] if tv - sv < gap_min else []) + \
                ([f"no-KD below {FLOOR_AP:g} AP"] if sv < FLOOR_AP else [])
            text += f"| {m} | {tv:.2f} | {sv:.2f} | {tv - sv:+.2f} | {'; '.join(flags) or 'ok'} |\n"
    return text


DIAGNOSTIC_PANELS = (("bn_gamma_mean", "adapter BN scale (mean)"), ("bn_beta_mean", "adapter BN shift (mean)"),
                     ("active", "active-ReLU fraction"), ("cka", "linear CKA(G_T, G_S)"),
                     ("grad_ratio", "|dL_kd/dF| / |dL_task/dF|"), ("ess", "effective sample size of phi"))


def _run_diagnostics(source):
    """The ``kd_diagnostics`` steps of one CSV source: a run directory (its ``train_stats.json``) or a run
    record (:mod:`benchmark.records`, the diagnostics it keeps; a record without them gives none: the run
    directory it names may hold another training of its spec, see ``records --cache``). ``[]`` where none."""
    import json

    from pcdet.utils.paths import REPO_ROOT

    run = Path(source)
    run = run if run.is_absolute() else REPO_ROOT / run
    if run.suffix == ".json":
        from benchmark.records import diagnostics_steps

        kept = json.loads(run.read_text()).get("result", {}).get("kd_diagnostics") if run.is_file() else None
        return diagnostics_steps(kept) if kept else []
    stats = run / "train_stats.json"
    return json.loads(stats.read_text()).get("kd_diagnostics", []) if stats.is_file() else []


def diagnostics_runs(tables, all_tables=None):
    """``[(label, [diagnostic records])]``: the lowest-seed run of every PointDistiller row (the published
    method and its variants) of the CSVs, read through :func:`_run_diagnostics` from the first source the
    CSV names for the row (its sources are in seed order)."""
    out = []
    for tid, spec, piv in _with_specs(tables, all_tables):
        for r in spec["ROWS"]:
            if not str(r.get("KD") or "").startswith("pointdistiller"):
                continue
            line = piv.get(r["NAME"], {}).get("bev_map")
            if not line or not line["source"]:
                continue
            records = _run_diagnostics(line["source"].split(";")[0])
            if records:
                out.append((f"{tid}: {r['NAME']}", records))
    return out


def _cpu_text(model, capability):
    """``"<model> (CPU <capability>)"``, or ``"CPU <capability>"`` where the model name was not kept."""
    return f"{model} (CPU {capability or '?'})" if model else f"CPU {capability or '?'}"


def training_compute(tables):
    """``[(table, summary)]``: what the trainings behind each table's accuracy cells cost, from the
    ``train_stats.json`` of every run directory its CSV names, or the run record it names
    (:mod:`benchmark.records`), each run once: the number of trainings,
    the sum of their epochs' wall seconds (evaluations not included; trainings that ran side by side
    overlap in time, so the elapsed time of the whole run is shorter), and how they computed (CPU
    model and capability, or device; threads, precision). The summary dict: ``trainings``,
    ``epoch_seconds``, ``how`` ({how: count}), and for the trainings taken from run records ``timed`` (their
    count), ``wall_seconds`` (the sum of their lengths, :func:`_run_span`) and ``elapsed_seconds`` (the
    length of the union of their spans)."""
    import json

    from pcdet.utils.paths import REPO_ROOT

    out = []
    for tid, lines in tables.items():
        runs = dict.fromkeys(src for line in lines if line.get("source") and line.get("precision")
                             for src in line["source"].split(";"))
        seconds, n, how, intervals, wall = 0.0, 0, {}, [], 0.0
        for src in runs:
            run = Path(src)
            run = run if run.is_absolute() else REPO_ROOT / run
            if run.suffix == ".json" and run.is_file():  # a run record (benchmark.records): what it kept
                rec = json.loads(run.read_text())
                res, machine = rec.get("result", {}), rec.get("machine", {})
                epochs = res.get("epochs") or []
                where = (_cpu_text(machine.get("cpu"), machine.get("capability"))
                         if rec.get("spec", {}).get("device", "cpu") == "cpu" else str(rec["spec"]["device"]))
                threads, precision = res.get("threads", "?"), res.get("precision") or "?"
                span = _run_span(rec) if epochs else None
                if span is not None:
                    intervals.append(span)
                    wall += span[1] - span[0]
            else:
                stats = run / "train_stats.json"
                if not stats.is_file():
                    continue
                data = json.loads(stats.read_text())
                epochs = data.get("epochs", [])
                info = data.get("run", {})
                cpu = info.get("cpu") or {}
                where = (_cpu_text(cpu.get("model"), cpu.get("capability"))
                         if info.get("device", "cpu") == "cpu" else str(info.get("device")))
                threads, precision = info.get("threads", "?"), (info.get("precision") or {}).get("name", "?")
            if not epochs:
                continue
            n += 1
            seconds += sum(float(e.get("seconds", 0.0)) for e in epochs)
            key = f"{where}, {threads} thread(s), {precision}"
            how[key] = how.get(key, 0) + 1
        if n:
            out.append((tid, {"trainings": n, "epoch_seconds": seconds, "how": how, "timed": len(intervals),
                              "wall_seconds": wall, "elapsed_seconds": _union_length(intervals)}))
    return out


def source_cpu(src):
    """The CPU one CSV source trained on (:func:`_cpu_text`): from a run record's ``machine``, or from a run
    directory's ``train_stats.json`` (``run.cpu``). None where the CPU's model name was not kept (a
    capability alone does not tell two CPUs apart) and for a training on another device (records keep
    the CPU only, not the accelerator's model)."""
    import json

    from pcdet.utils.paths import REPO_ROOT

    run = Path(src)
    run = run if run.is_absolute() else REPO_ROOT / run
    try:
        if run.suffix == ".json" and run.is_file():
            rec = json.loads(run.read_text())
            if rec.get("spec", {}).get("device", "cpu") != "cpu":
                return None
            machine = rec.get("machine") or {}
            return _cpu_text(machine["cpu"], machine.get("capability")) if machine.get("cpu") else None
        stats = run / "train_stats.json"
        if stats.is_file():
            info = json.loads(stats.read_text()).get("run", {})
            if info.get("device", "cpu") != "cpu":
                return None
            cpu = info.get("cpu") or {}
            return _cpu_text(cpu["model"], cpu.get("capability")) if cpu.get("model") else None
    except (OSError, ValueError):
        return None
    return None


def per_seed_source(line):
    """``{seed: source}`` of a CSV line whose ``source`` names one run per seed, in the order of its
    ``seeds`` column (a trailing note such as "distilled from 2 trainings of the same teacher spec" is not
    a run); ``{}`` where the counts differ."""
    seeds = [int(s) for s in (line.get("seeds") or "").split(";") if s != ""]
    runs = [s for s in (line.get("source") or "").split(";") if s and not s.startswith("distilled from ")]
    return dict(zip(seeds, runs)) if seeds and len(seeds) == len(runs) else {}


def cpu_pairing(tables, all_tables=None):
    """Per KD row with per-seed values, the CPUs its seed pairs trained on: ``[(table, row, metric,
    {"same": [seeds], "cross": {(kd cpu, no-KD cpu): [seeds]}, "unknown": [seeds], "diffs": {seed: KD minus
    no KD}, "same_t": paired_t over the same-CPU pairs, "cross_t": paired_t over the cross-CPU ones,
    "split": welch_t of the cross-CPU against the same-CPU differences})]``, only for tables where some
    pair crossed CPUs; a row measured by the same runs as an earlier one (:func:`same_runs_as`) is
    listed once. Two trainings are on the same CPU when their CPU's reported model name and torch
    capability agree (:func:`source_cpu`; a generic name such as "Intel(R) Xeon(R) Processor" covers
    several models); the machine of the KD arm's teacher is not counted. Float rounding differs between
    CPU kernels, so a training of one seed on two CPUs gives two different students; a pair split
    across CPUs carries that difference on top of the KD effect (noise if the CPUs have no systematic
    effect on the score, bias if they have)."""
    out = []
    for tid, spec, piv in _with_specs(tables, all_tables):
        partners = kd_partners(spec)
        repeated = {metric: same_runs_as(piv, [row for row, _ in partners], metric) for metric in PRIMARY_METRICS}
        found = []
        for row, metric, kd_line, ref in partner_cells(piv, partners):
            if row in repeated[metric]:
                continue
            kd_v, ref_v = per_seed(kd_line), per_seed(ref)
            kd_src, ref_src = per_seed_source(kd_line), per_seed_source(ref)
            common = sorted(set(kd_v) & set(ref_v))
            if len(common) < 2:
                continue
            pairs = {"same": [], "cross": {}, "unknown": [], "diffs": {s: kd_v[s] - ref_v[s] for s in common}}
            for s in common:
                a = source_cpu(kd_src[s]) if s in kd_src else None
                b = source_cpu(ref_src[s]) if s in ref_src else None
                if a is None or b is None:
                    pairs["unknown"].append(s)
                elif a == b:
                    pairs["same"].append(s)
                else:
                    pairs["cross"].setdefault((a, b), []).append(s)
            cross = sorted(s for seeds in pairs["cross"].values() for s in seeds)
            pairs["same_t"] = paired_t({s: kd_v[s] for s in pairs["same"]}, ref_v)
            pairs["cross_t"] = paired_t({s: kd_v[s] for s in cross}, ref_v)
            st, ct = pairs["same_t"], pairs["cross_t"]
            pairs["split"] = (welch_t(ct["mean"], ct["sd"], ct["n"], st["mean"], st["sd"], st["n"])
                              if st and ct else None)
            found.append((tid, row, metric, pairs))
        if any(p["cross"] for *_, p in found):
            out.extend(found)
    return out


def _t_text(pt, seeds, diffs):
    """One subset of seed pairs: its seeds and paired gain with 95% CI and uncorrected p, or the one
    pair's difference."""
    if not seeds:
        return "none"
    head = f"seeds {','.join(str(s) for s in seeds)}"
    if pt is None:
        return f"{head}: {diffs[seeds[0]]:+.2f} (one pair, no interval)"
    return f"{head}: {pt['mean']:+.2f} [{pt['ci'][0]:+.2f}, {pt['ci'][1]:+.2f}] (n={pt['n']}), p {pt['p']:.3f}"


def cpu_pairing_text(tables, all_tables=None):
    """The report section of :func:`cpu_pairing` ("" where no table has a cross-CPU pair)."""
    rows = cpu_pairing(tables, all_tables)
    if not rows:
        return ""
    text = ("\n## CPUs of the seed pairs\n\nThe paired arms of a seed trained on different CPUs where a "
            "table's runs came from several machines. The float rounding of two CPUs' kernels differs, so "
            "the same seed's training gives two different students: a pair split across CPUs carries that "
            "difference on top of the KD effect. The paired gain over the same-CPU pairs is free of it "
            "(but rests on fewer seeds); the gain over the cross-CPU pairs is not. \"Same CPU\" means the "
            "same reported model name and torch capability (a generic name may cover several models); the "
            "machine that trained the KD arm's teacher is not counted. The last column tests the "
            "cross-CPU against the same-CPU differences (Welch's t): a difference there would point to a "
            "CPU effect on the score, though the two subsets also differ by seed and few pairs see only a "
            "large one. p values here are not corrected for multiple rows.\n\n"
            "| table | row | metric | same-CPU pairs: gain [95% CI] | cross-CPU pairs (KD arm / no-KD arm) | "
            "cross-CPU pairs: gain [95% CI] | cross minus same: Welch t (df), p |\n|---|---|---|---|---|---|---|\n")
    confounded = {}
    for tid, row, metric, p in rows:
        cross = sorted(s for seeds in p["cross"].values() for s in seeds)
        where = [f"{a} / {b}: {len(seeds)}" for (a, b), seeds in sorted(p["cross"].items())]
        if p["unknown"]:
            where.append(f"CPU not kept: {len(p['unknown'])}")
        split = (f"{p['split'][0]:+.2f} ({p['split'][1]:.1f}), {p['split'][2]:.3f}" if p["split"]
                 else "needs 2 pairs on each side")
        text += (f"| {tid} | {row} | {metric} | {_t_text(p['same_t'], p['same'], p['diffs'])} | "
                 f"{'; '.join(where) or 'none'} | {_t_text(p['cross_t'], cross, p['diffs'])} | {split} |\n")
        if not p["same"] and not p["unknown"] and len(p["cross"]) == 1:
            confounded.setdefault(f"{tid} / {row}", []).append(metric)
    if confounded:
        text += ("\nNo same-CPU pair, and every pair split the same way (one CPU for the KD arm, another for "
                 "no KD): there the CPU is confounded with the arm, so the gain cannot be told apart from a "
                 "systematic CPU effect (only a retraining of some seeds on the other CPU can bound that): "
                 + "; ".join(f"{k} ({', '.join(v)})" for k, v in confounded.items()) + ".\n")
    return text


def _run_span(rec):
    """``(start, end)`` in POSIX seconds of a run record's training: its ``finished`` time (UTC) minus
    its length, the command's ``result.seconds`` (evaluations included) or, where larger, the sum of its
    epochs' seconds (a training resumed after an interruption times only its last command; its span then
    stands for the time it trained, not the pause); None where either was not kept."""
    import datetime

    try:
        end = datetime.datetime.strptime(rec["finished"], "%Y-%m-%dT%H:%M:%SZ").replace(
            tzinfo=datetime.timezone.utc).timestamp()
        res = rec["result"]
        length = max(float(res["seconds"]), sum(float(e.get("seconds", 0.0)) for e in res.get("epochs") or []))
        return end - length, end
    except (KeyError, TypeError, ValueError):
        return None


def _union_length(intervals):
    """Total length of the union of ``(start, end)`` intervals: the wall time during which at least one of
    the trainings ran (side-by-side trainings counted once, the pauses between sessions not at all)."""
    total, reach = 0.0, None
    for a, b in sorted(intervals):
        if reach is None or a > reach:
            total += b - a
            reach = b
        elif b > reach:
            total += b - reach
            reach = b
    return total


def _compute_text(tables):
    rows = training_compute(tables)
    if not rows:
        return ""
    text = ("\n## Training compute\n\nSum of the epochs' wall seconds of every training behind a table's "
            "accuracy cells (each run once; evaluations not included; trainings that ran side by side overlap, "
            "so the elapsed time is shorter), with how they computed. For the trainings taken from run records "
            "(which keep when each finished and how long its command ran, evaluations included): the sum of "
            "their commands' wall hours, and the elapsed hours during which at least one of them ran (the "
            "union of their time spans: side-by-side trainings counted once, pauses between sessions not "
            "at all).\n\n| table | trainings | epoch hours | timed by records | command hours | elapsed hours | "
            "computed on (runs) |\n|---|---|---|---|---|---|---|\n")
    for tid, c in rows:
        how = "; ".join(f"{k} ({v})" for k, v in sorted(c["how"].items()))
        timed = (f"{c['timed']} | {c['wall_seconds'] / 3600:.2f} | {c['elapsed_seconds'] / 3600:.2f}" if c["timed"]
                 else "0 | | ")
        text += f"| {tid} | {c['trainings']} | {c['epoch_seconds'] / 3600:.2f} | {timed} | {how} |\n"
    return text


def _levels(records, name):
    """``{level: [(iteration, value)]}`` of the diagnostic ``name`` per distilled level (the ``<level>/``
    prefix of its keys), in step order, values that are not finite left out."""
    import math

    out = {}
    for rec in records:
        for f, v in rec.items():
            level, _, key = f.rpartition("/")
            if key == name and isinstance(v, (int, float)) and math.isfinite(v):
                out.setdefault(level, []).append((rec["iteration"], v))
    return out


def kd_signal_decay(series, fraction=0.1):
    """When the KD signal of one distilled level dies, from its ``grad_ratio`` series (``[(iteration,
    value)]``, :func:`_levels`; |dL_kd/dF| / |dL_task/dF| at the distilled feature): ``dict(first, peak,
    peak_iteration, last, below_iteration)``, ``below_iteration`` being the first iteration after the peak
    from which the ratio stays below ``fraction`` x its peak for the rest of the run (None if it never
    does); None for an empty series. Only as fine as the logged steps."""
    if not series:
        return None
    k_peak = max(range(len(series)), key=lambda i: series[i][1])
    peak = series[k_peak][1]
    below = None
    for it, v in reversed(series[k_peak:]):
        if v >= fraction * peak:
            break
        below = it
    return {"first": series[0][1], "peak": peak, "peak_iteration": series[k_peak][0], "last": series[-1][1],
            "below_iteration": below}


def diagnostics_text(tables, all_tables=None):
    """The "when the KD signal dies" table: one line per run and distilled level (:func:`kd_signal_decay`)."""
    lines = []
    for label, records in diagnostics_runs(tables, all_tables):
        ratio, cka, act = (_levels(records, k) for k in ("grad_ratio", "cka", "s_active"))
        for level, series in ratio.items():
            d = kd_signal_decay(series)
            name = label if len(ratio) == 1 else f"{label} [{level}]"
            below = "never" if d["below_iteration"] is None else f"iteration {d['below_iteration']}"
            last = [f"{x[level][-1][1]:.3f}" if x.get(level) else "" for x in (cka, act)]
            lines.append(f"| {name} | {d['first']:.3g} | {d['peak']:.3g} ({d['peak_iteration']}) | {d['last']:.3g} | "
                         f"{below} | {last[0]} | {last[1]} |\n")
    if not lines:
        return ""
    return ("\n## When the KD signal dies (diagnostics of the lowest-seed run of each PointDistiller arm)\n\n"
            "Ratio of the KD to the task gradient norm at the distilled feature: at the first logged step, at "
            "its peak, at the last step, and the first iteration after the peak from which it stays below a "
            "tenth of its peak (as fine as the logged steps); linear CKA between teacher and student graph "
            "features and the student adapter's active-ReLU fraction at the last step; one line per distilled "
            "level.\n\n"
            "| run | ratio first | peak (iteration) | last | below peak/10 from | CKA last | student active last |\n"
            "|---|---|---|---|---|---|---|\n") + "".join(lines)


def _plot_diagnostics(tables, path, plt, all_tables=None):
    runs = diagnostics_runs(tables, all_tables)
    if not runs:
        return None
    fig, axes = plt.subplots(2, 3, figsize=(12, 6.5))
    for ax, (key, title) in zip(axes.ravel(), DIAGNOSTIC_PANELS):
        for k, (label, records) in enumerate(runs):
            for side, ls in (("t_", "-"), ("s_", "--"), ("", "-")):
                levels = _levels(records, side + key)
                if not levels or not (side or key in ("cka", "grad_ratio", "ess")):
                    continue
                for j, (level, series) in enumerate(levels.items()):
                    where = ' teacher side' if side == 't_' else ' student side' if side == 's_' else ''
                    # earlier arms drawn wider (capped), so that two arms with equal curves (phi of equal
                    # tau) both show; a second distilled level dotted
                    ax.plot([x for x, _ in series], [y for _, y in series], ls if j == 0 else ":", color=f"C{k}",
                            lw=1 + 0.8 * min(len(runs) - 1 - k, 3), alpha=0.85,
                            label=f"{label}{where}" + (f" [{level}]" if len(levels) > 1 else ""))
        ax.set_title(title, fontsize=8)
        ax.set_xlabel("iteration", fontsize=7)
        ax.tick_params(labelsize=6)
        if key == "grad_ratio":
            ax.set_yscale("log")
    axes[0, 0].legend(fontsize=5)
    fig.suptitle("PointDistiller diagnostics of the lowest-seed run of each arm (pcdet.kd.diagnostics)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")
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
        text += ("\n## KD gains (KD row minus the same student without KD)\n\nWith per-seed values: the paired t "
                 "test on the seed-matched differences (their mean gain, 95% confidence interval, two-sided p, and p after "
                 "Holm's correction across the table's KD rows for that metric, a row measured by the same runs as an "
                 "earlier one counted once). Welch's t test of the two rows over "
                 "their seeds as a secondary test (with 3 seeds a row, p < 0.05 needs |t| of about 2.8 or more). 'measured' is "
                 "the difference of the two rows' means over all their seeds; when the rows have different seed "
                 "counts (e.g. 10 without KD, 3 with), the paired gain over the common seeds differs from it.\n\n"
                 "| table | row | metric | measured | paired: gain [95% CI] (n), p (Holm) | Welch t (df) | p | paper |\n"
                 "|---|---|---|---|---|---|---|---|\n")
        for t, n, m, g, p, w, pt in gains:
            w_s = "| |" if w is None else f"| {w[0]:+.2f} ({w[1]:.1f}) | {w[2]:.3f} |"
            pt_s = "" if pt is None else (f"{pt['mean']:+.2f} [{pt['ci'][0]:+.2f}, {pt['ci'][1]:+.2f}] (n={pt['n']}), "
                                          f"p {pt['p']:.3f} ({pt['p_holm']:.3f})")
            text += (f"| {t} | {n} | {m} | {'' if g is None else f'{g:+.2f}'} | {pt_s} {w_s} "
                     f"{'' if p is None else f'{p:+.2f}'} |\n")
    text += gate_text(tables)
    text += cpu_pairing_text(tables)
    text += _compute_text(tables)
    text += diagnostics_text(tables)
    for t, metric, ranked, tau in method_rankings(tables):
        tau_s = "undefined" if tau is None else f"{tau:+.2f}"
        text += (f"\n## Ranking of methods: {t}, {metric} (measured order; Kendall tau-b against the paper's "
                 f"order: {tau_s}; published entries of other architectures and rows measured by the same runs "
                 f"as an earlier row left out)\n\n"
                 "| measured rank | row | measured | paper rank | paper |\n|---|---|---|---|---|\n")
        for n, m, sd, mr, p, pr in ranked:
            text += f"| {mr} | {n} | {m:.2f}{'' if sd is None else f' +- {sd:.2f}'} | {pr} | {p:.1f} |\n"
    plots = [_plot_accuracy(tables, out / "accuracy_vs_compute.png", plt), _plot_latency(tables, out / "latency.png", plt),
             _plot_gains(gains, out / "kd_gains.png", plt)]
    plots += [_plot_forest(gains, tid, out / f"forest_{tid}.png", plt) for tid in dict.fromkeys(g[0] for g in gains)]
    plots += [_plot_diagnostics(tables, out / "kd_diagnostics.png", plt)]
    plots = [p for p in plots if p]
    if plots:
        text += "\n" + "\n".join(f"![{p.stem}]({p.name})" for p in plots) + "\n"
    (out / "report.md").write_text(text)
    print(f"[benchmark] wrote {out / 'report.md'} and {len(plots)} plot(s) from {len(tables)} table(s)")
    return out / "report.md"
