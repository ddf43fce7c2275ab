"""benchmark.report: KD gains and method rankings computed from the CSVs alone, Kendall's tau-b
checked against scipy, and a report written from a small CSV folder."""
import pytest

from benchmark import report
from benchmark.results_csv import cell, write_table_csv

SPEC = {"t": {"ID": "t", "ROWS": [
    {"NAME": "teacher", "MODEL": "big", "TEACHER": True},
    {"NAME": "no KD", "MODEL": "small", "KD": None},
    {"NAME": "A", "MODEL": "small", "KD": "a"},
    {"NAME": "B", "MODEL": "small", "KD": "b"},
    {"NAME": "C", "MODEL": "small", "KD": "c"},
]}}
# (paper, measured) 3D mAP: the measured order swaps A and B
VALUES = {"teacher": (70.0, 40.0), "no KD": (58.0, 10.0), "A": (61.0, 11.0), "B": (60.0, 12.0), "C": (62.0, 13.0)}


def _write(tmp_path):
    lines = [cell("t", row, "3d_map", paper=p, measured=m, measured_std=0.5, n_seeds=3, source=f"runs/{row}")
             for row, (p, m) in VALUES.items()]
    write_table_csv(tmp_path / "t.csv", lines)
    return report.read_csvs(tmp_path)


@pytest.mark.parametrize("xs,ys", [([1, 2, 3, 4], [1, 2, 3, 4]), ([1, 2, 3, 4], [4, 3, 2, 1]),
                                   ([1, 2, 2, 3, 5], [2, 1, 3, 3, 4]), ([3.1, 1.2, 2.2, 2.2], [1, 1, 2, 3])])
def test_kendall_tau_b_matches_scipy(xs, ys):
    scipy_stats = pytest.importorskip("scipy.stats")
    assert report.kendall_tau_b(xs, ys) == pytest.approx(scipy_stats.kendalltau(xs, ys).statistic)


def test_kendall_tau_b_of_a_constant_sequence_is_undefined():
    assert report.kendall_tau_b([1, 1, 1], [1, 2, 3]) is None


def test_rankings_leave_out_the_teacher_and_rank_by_mean(tmp_path):
    tables = _write(tmp_path)
    [(tid, metric, ranked, tau)] = report.method_rankings(tables, SPEC)
    assert (tid, metric) == ("t", "3d_map")
    assert [r[0] for r in ranked] == ["C", "B", "A", "no KD"]  # measured order
    assert {r[0]: r[5] for r in ranked} == {"C": 1, "A": 2, "B": 3, "no KD": 4}  # paper ranks
    # 6 pairs, one discordant (A, B): tau = (5 - 1) / 6
    assert tau == pytest.approx(4 / 6)


def test_gains_are_kd_row_minus_the_same_student_without_kd(tmp_path):
    gains = report.kd_gains(_write(tmp_path), SPEC)
    assert [(g[1], g[3], g[4]) for g in gains] == [("A", 1.0, 3.0), ("B", 2.0, 2.0), ("C", 3.0, 4.0)]


@pytest.mark.parametrize("a,b", [((13.0, 0.5, 3), (10.0, 0.5, 3)), ((9.69, 0.44, 3), (8.47, 1.89, 3)),
                                 ((7.66, 0.59, 3), (8.47, 1.89, 5))])
def test_welch_t_matches_scipy(a, b):
    scipy_stats = pytest.importorskip("scipy.stats")
    t, df, p = report.welch_t(*a, *b)
    ref = scipy_stats.ttest_ind_from_stats(*a, *b, equal_var=False)
    assert (t, p) == pytest.approx((ref.statistic, ref.pvalue))
    assert df == pytest.approx(ref.df) if hasattr(ref, "df") else df > 0


def test_welch_t_needs_two_seeds_and_a_spread():
    assert report.welch_t(1.0, None, 3, 0.0, 0.5, 3) is None
    assert report.welch_t(1.0, 0.5, 1, 0.0, 0.5, 3) is None
    assert report.welch_t(1.0, 0.0, 3, 0.0, 0.0, 3) is None


def test_report_holds_the_ranking_and_gains(tmp_path, monkeypatch):
    _write(tmp_path)
    monkeypatch.setattr(report.registry, "load_tables", lambda require_all=False: SPEC)
    text = report.write_report(tmp_path).read_text()
    assert "Ranking of methods: t, 3d_map" in text and "Kendall tau-b against the paper's order: +0.67" in text
    assert "| 1 | C | 13.00 +- 0.50 | 1 | 62.0 |" in text
    # gain 1.0 with std 0.5 on 3 seeds each: t = 1 / sqrt(2 * 0.25 / 3) = 2.45 on 4 degrees of freedom
    assert "| t | A | 3d_map | +1.00 |  | +2.45 (4.0) | 0.070 | +3.00 |" in text  # no per-seed values: no paired test
    assert (tmp_path / "kd_gains.png").is_file()


def test_paired_t_matches_scipy_and_pairs_by_seed():
    scipy_stats = pytest.importorskip("scipy.stats")
    kd = {0: 12.0, 1: 11.5, 2: 13.1, 3: 12.4, 9: 99.0}  # seed 9 has no partner: left out
    ref = {3: 11.9, 2: 12.0, 1: 11.0, 0: 11.2, 7: -5.0}
    res = report.paired_t(kd, ref)
    seeds = [0, 1, 2, 3]
    sp = scipy_stats.ttest_rel([kd[s] for s in seeds], [ref[s] for s in seeds])
    assert res["n"] == 4 and res["df"] == 3
    assert (res["t"], res["p"]) == pytest.approx((sp.statistic, sp.pvalue))
    d = [kd[s] - ref[s] for s in seeds]  # 0.8, 0.5, 1.1, 0.5: mean 0.725
    assert res["mean"] == pytest.approx(0.725)
    half = scipy_stats.t.ppf(0.975, 3) * scipy_stats.tstd(d) / 2.0
    assert res["ci"] == pytest.approx((0.725 - half, 0.725 + half))
    assert report.paired_t({0: 1.0}, {0: 2.0}) is None
    assert report.paired_t({0: 1.0, 1: 2.0}, {0: 1.0, 1: 2.0})["p"] == 1.0  # identical arms


def test_holm_step_down():
    # by hand: sorted 0.01, 0.02, 0.04 -> 3 x 0.01 = 0.03, max(0.03, 2 x 0.02) = 0.04, max(0.04, 1 x 0.04) = 0.04
    assert report.holm([0.04, 0.01, None, 0.02]) == pytest.approx([0.04, 0.03, None, 0.04])
    assert report.holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])


def test_report_with_per_seed_values_gives_paired_intervals_and_a_forest_plot(tmp_path, monkeypatch):
    spec = {"t": {"ID": "t", "ROWS": [{"NAME": "teacher", "MODEL": "big", "TEACHER": True},
                                      {"NAME": "no KD", "MODEL": "small", "KD": None},
                                      {"NAME": "A", "MODEL": "small", "KD": "a"}]}}
    per_seed = {"teacher": [40.0], "no KD": [10.0, 11.0, 12.0], "A": [10.5, 11.6, 12.4]}
    lines = []
    for row, vals in per_seed.items():
        mean = sum(vals) / len(vals)
        std = (sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) ** 0.5 if len(vals) > 1 else None
        lines.append(cell("t", row, "3d_map", paper=None, measured=mean, measured_std=std, n_seeds=len(vals),
                          source=f"runs/{row}", seeds=list(range(len(vals))), values=vals))
    write_table_csv(tmp_path / "t.csv", lines)
    tables = report.read_csvs(tmp_path)
    [gain] = report.kd_gains(tables, spec)
    pt = gain[6]
    assert pt["mean"] == pytest.approx(0.5) and pt["n"] == 3 and pt["p_holm"] == pytest.approx(pt["p"])
    assert pt["ci"][0] < 0.5 < pt["ci"][1]
    monkeypatch.setattr(report.registry, "load_tables", lambda require_all=False: spec)
    report.write_report(tmp_path)
    text = (tmp_path / "report.md").read_text()
    assert "paired: gain [95% CI]" in text and "(n=3)" in text and (tmp_path / "forest_t.png").stat().st_size > 1000


def test_rows_with_different_seed_counts_report_the_seed_matched_gain_inside_its_interval(tmp_path, monkeypatch):
    # 5 seeds without KD, 3 with: the all-seed difference of means (-0.40) lies outside the paired interval
    spec = {"t": {"ID": "t", "ROWS": [{"NAME": "no KD", "MODEL": "small", "KD": None},
                                      {"NAME": "A", "MODEL": "small", "KD": "a"}]}}
    per_seed = {"no KD": [10.0, 11.0, 12.0, 14.0, 15.0], "A": [11.0, 11.9, 13.1]}
    lines = []
    for row, vals in per_seed.items():
        mean = sum(vals) / len(vals)
        std = (sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) ** 0.5
        lines.append(cell("t", row, "3d_map", paper=None, measured=mean, measured_std=std, n_seeds=len(vals),
                          source=f"runs/{row}", seeds=list(range(len(vals))), values=vals))
    write_table_csv(tmp_path / "t.csv", lines)
    [gain] = report.kd_gains(report.read_csvs(tmp_path), spec)
    pt = gain[6]
    assert gain[3] == pytest.approx(12.0 - 12.4) and pt["mean"] == pytest.approx(1.0) and pt["n"] == 3
    assert pt["ci"][0] < pt["mean"] < pt["ci"][1] and not pt["ci"][0] < gain[3] < pt["ci"][1]
    monkeypatch.setattr(report.registry, "load_tables", lambda require_all=False: spec)
    report.write_report(tmp_path)
    line = next(x for x in (tmp_path / "report.md").read_text().splitlines() if x.startswith("| t | A |"))
    assert "| -0.40 | +1.00 [" in line and "(n=3)" in line


def test_segmentation_tables_get_miou_gains_and_rankings(tmp_path):
    spec = {"s": {"ID": "s", "ROWS": [{"NAME": "teacher", "MODEL": "c3d", "TEACHER": True},
                                      {"NAME": "C3D_0.5x", "MODEL": "c3d_half", "KD": None},
                                      {"NAME": "+KD", "MODEL": "c3d_half", "KD": "hinton"},
                                      {"NAME": "+PVD", "MODEL": "c3d_half", "KD": "pvd"}]}}
    values = {"teacher": (68.9, 43.7), "C3D_0.5x": (65.3, 35.9), "+KD": (65.6, 36.4), "+PVD": (68.9, 37.1)}
    write_table_csv(tmp_path / "s.csv", [cell("s", row, "miou", paper=p, measured=m, measured_std=0.8, n_seeds=3,
                                              source=f"runs/{row}") for row, (p, m) in values.items()])
    tables = report.read_csvs(tmp_path)
    gains = {(g[1], g[2]): g for g in report.kd_gains(tables, spec)}
    assert gains[("+PVD", "miou")][3] == pytest.approx(1.2) and gains[("+PVD", "miou")][4] == pytest.approx(3.6)
    assert gains[("+KD", "miou")][3] == pytest.approx(0.5)
    [(tid, metric, ranked, tau)] = report.method_rankings(tables, spec)
    assert metric == "miou" and [r[0] for r in ranked] == ["+PVD", "+KD", "C3D_0.5x"]


def test_reference_rows_and_rows_of_the_same_runs_are_ranked_and_corrected_once(tmp_path):
    # 'PVD *' repeats the PVD runs under another paper figure; 'other net' is a published reference entry
    spec = {"s": {"ID": "s", "ROWS": [{"NAME": "other net", "MODEL": "other", "KD": None, "REFERENCE": "cited"},
                                      {"NAME": "teacher", "MODEL": "c3d", "TEACHER": True},
                                      {"NAME": "C3D_0.5x", "MODEL": "half", "KD": None},
                                      {"NAME": "+KD", "MODEL": "half", "KD": "hinton"},
                                      {"NAME": "+PVD", "MODEL": "half", "KD": "pvd"},
                                      {"NAME": "+PVD *", "MODEL": "half", "KD": "pvd"}]}}
    seeds = {"C3D_0.5x": ([10.0, 11.0, 12.0], "runs/base"), "+KD": ([10.2, 11.5, 12.1], "runs/kd"),
             "+PVD": ([11.0, 11.9, 13.2], "runs/pvd"), "+PVD *": ([11.0, 11.9, 13.2], "runs/pvd")}
    paper = {"C3D_0.5x": 65.3, "+KD": 65.6, "+PVD": 68.9, "+PVD *": 71.2}
    lines = [cell("s", "other net", "miou", paper=59.5),
             cell("s", "teacher", "miou", paper=68.9, measured=40.0, source="runs/t")]
    for row, (vals, src) in seeds.items():
        mean = sum(vals) / 3
        std = (sum((v - mean) ** 2 for v in vals) / 2) ** 0.5
        lines.append(cell("s", row, "miou", paper=paper[row], measured=mean, measured_std=std, n_seeds=3,
                          source=src, seeds=[0, 1, 2], values=vals))
    write_table_csv(tmp_path / "s.csv", lines)
    tables = report.read_csvs(tmp_path)
    gains = {g[1]: g[6] for g in report.kd_gains(tables, spec)}
    # two distinct comparisons: Holm multiplies the smaller p by 2, not by 3
    ps = sorted((gains["+KD"]["p"], gains["+PVD"]["p"]))
    low = "+KD" if gains["+KD"]["p"] == ps[0] else "+PVD"
    assert gains[low]["p_holm"] == pytest.approx(min(1.0, 2 * ps[0]))
    assert gains["+PVD *"]["p_holm"] == gains["+PVD"]["p_holm"]
    [(tid, metric, ranked, tau)] = report.method_rankings(tables, spec)
    assert [r[0] for r in ranked] == ["+PVD", "+KD", "C3D_0.5x"] and tau == pytest.approx(1.0)


def test_training_compute_sums_each_runs_epochs_once(tmp_path):
    import json

    for name, secs, prec in (("a", [10.0, 20.0], "bf16"), ("b", [5.0], "fp32")):
        run = tmp_path / "runs" / name
        run.mkdir(parents=True)
        (run / "train_stats.json").write_text(json.dumps({
            "epochs": [{"epoch": i + 1, "seconds": s} for i, s in enumerate(secs)],
            "run": {"device": "cpu", "threads": 1, "precision": {"name": prec}, "cpu": {"capability": "AVX2"}}}))
    lines = [cell("t", row, metric, measured=1.0, n_seeds=1, source=str(tmp_path / "runs" / row), precision="x")
             for row in ("a", "b") for metric in ("3d_map", "bev_map")]
    lines.append(cell("t", "c", "gflops", measured=2.0, source=str(tmp_path / "runs" / "c")))  # not a training
    write_table_csv(tmp_path / "t.csv", lines)
    [(tid, c)] = report.training_compute(report.read_csvs(tmp_path))
    assert tid == "t" and c["trainings"] == 2 and c["epoch_seconds"] == pytest.approx(35.0)
    assert c["how"] == {"CPU AVX2, 1 thread(s), bf16": 1, "CPU AVX2, 1 thread(s), fp32": 1}
    assert "| t | 2 | 0.01 |" in report._compute_text(report.read_csvs(tmp_path))


def test_training_compute_reads_run_records_too(tmp_path):
    """A cell whose source is a run record (a training of another machine's cache) counts its epochs."""
    import json

    record = tmp_path / "records" / "train" / "s-0123456789ab.json"
    record.parent.mkdir(parents=True)
    record.write_text(json.dumps({"hash": "0123456789ab", "spec": {"device": "cpu"},
                                  "machine": {"capability": "AVX512"},
                                  "result": {"epochs": [{"epoch": 1, "seconds": 30.0}, {"epoch": 2, "seconds": 6.0}],
                                             "threads": 1, "precision": "fp32"}}))
    write_table_csv(tmp_path / "t.csv", [cell("t", "s", "miou", measured=1.0, n_seeds=1, source=str(record),
                                              precision="fp32")])
    [(tid, c)] = report.training_compute(report.read_csvs(tmp_path))
    assert c["trainings"] == 1 and c["epoch_seconds"] == pytest.approx(36.0)
    assert c["how"] == {"CPU AVX512, 1 thread(s), fp32": 1}
    # a record that kept the CPU's model name: two CPUs of one capability stay apart in the summary
    rec = json.loads(record.read_text())
    rec["machine"]["cpu"] = "AMD EPYC"
    record.write_text(json.dumps(rec))
    [(tid, c)] = report.training_compute(report.read_csvs(tmp_path))
    assert c["how"] == {"AMD EPYC (CPU AVX512), 1 thread(s), fp32": 1}


def test_diagnostics_come_from_the_run_directory_or_the_record_itself(tmp_path):
    """The diagnostics plot takes the lowest-seed run of each PointDistiller row: a run directory's
    train_stats.json, or the diagnostics a run record keeps (by column, read back as steps); a record
    without them gives no curve, even where the run directory it names exists here (it may hold another
    training of the spec)."""
    import json

    spec = {"t": {"ID": "t", "ROWS": [{"NAME": "no KD", "MODEL": "s"},
                                      {"NAME": "PD", "MODEL": "s", "KD": "pointdistiller"},
                                      {"NAME": "PD2", "MODEL": "s", "KD": "pointdistiller_tau4"},
                                      {"NAME": "PD3", "MODEL": "s", "KD": "pointdistiller_x"}]}}
    diag = [{"iteration": 1, "kd/cka": 0.2}, {"iteration": 2, "kd/cka": 0.1}]
    run = tmp_path / "cache" / "seed0"
    run.mkdir(parents=True)
    (run / "train_stats.json").write_text(json.dumps({"epochs": [], "kd_diagnostics": diag}))
    rec_dir = tmp_path / "records"
    rec_dir.mkdir()
    (rec_dir / "pd2.json").write_text(json.dumps({"result": {"kd_diagnostics": {"iteration": [1], "kd/cka": [0.2]}}}))
    (rec_dir / "pd3.json").write_text(json.dumps({"result": {"run_dir": str(run)}}))
    lines = [cell("t", "no KD", "bev_map", measured=1.0, n_seeds=1, source=str(run)),
             cell("t", "PD", "bev_map", measured=1.0, n_seeds=2, source=f"{run};{rec_dir / 'pd3.json'}"),
             cell("t", "PD2", "bev_map", measured=1.0, n_seeds=1, source=str(rec_dir / "pd2.json")),
             cell("t", "PD3", "bev_map", measured=1.0, n_seeds=1, source=str(rec_dir / "pd3.json"))]
    write_table_csv(tmp_path / "t.csv", lines)
    runs = report.diagnostics_runs(report.read_csvs(tmp_path), spec)
    assert runs == [("t: PD", diag), ("t: PD2", diag[:1])]


def test_kd_signal_decay_finds_where_the_ratio_stays_below_a_tenth_of_its_peak():
    ratios = [0.2, 1.0, 0.5, 0.05, 0.2, 0.08, 0.01, 0.02]  # falls below 0.1 at step 4 but rises again
    series = [(10 * (i + 1), r) for i, r in enumerate(ratios)]
    d = report.kd_signal_decay(series)
    assert d == {"first": 0.2, "peak": 1.0, "peak_iteration": 20, "last": 0.02, "below_iteration": 60}
    assert report.kd_signal_decay([(i, 1.0) for i in range(3)])["below_iteration"] is None
    assert report.kd_signal_decay([]) is None


def test_diagnostics_table_has_a_line_per_level_and_ignores_non_finite_ratios(tmp_path):
    """Two distilled levels give two lines (never one series of both); an infinite ratio (zero task
    gradient) is not taken for the peak."""
    import json

    steps = [{"iteration": 1, "a/grad_ratio": 1.0, "b/grad_ratio": float("inf"), "a/cka": 0.5, "b/cka": 0.7},
             {"iteration": 2, "a/grad_ratio": 0.01, "b/grad_ratio": 2.0, "a/cka": 0.6, "b/cka": 0.8,
              "b/s_active": 0.4},
             {"iteration": 3, "a/grad_ratio": 0.02, "b/grad_ratio": 1.5}]
    assert report._levels(steps, "grad_ratio") == {"a": [(1, 1.0), (2, 0.01), (3, 0.02)], "b": [(2, 2.0), (3, 1.5)]}
    run = tmp_path / "run"
    run.mkdir()
    (run / "train_stats.json").write_text(json.dumps({"kd_diagnostics": steps}))
    write_table_csv(tmp_path / "t.csv", [cell("t", "PD", "bev_map", measured=1.0, n_seeds=1, source=str(run))])
    spec = {"t": {"ID": "t", "ROWS": [{"NAME": "PD", "MODEL": "s", "KD": "pointdistiller"}]}}
    text = report.diagnostics_text(report.read_csvs(tmp_path), spec)
    assert "| t: PD [a] | 1 | 1 (1) | 0.02 | iteration 2 | 0.600 |  |" in text
    assert "| t: PD [b] | 2 | 2 (2) | 1.5 | never | 0.800 | 0.400 |" in text


def test_training_compute_times_the_whole_run_from_the_records_spans(tmp_path):
    """Elapsed hours = the union of the records' [finished - seconds, finished] spans: two trainings side
    by side count once, a pause between sessions not at all; command hours are their plain sum."""
    import json

    spans = {"a": ("2026-01-01T01:00:00Z", 3600.0), "b": ("2026-01-01T01:30:00Z", 3600.0),  # 00:00-01:00, 00:30-01:30
             "c": ("2026-01-02T00:30:00Z", 1800.0)}  # the next day, 00:00-00:30
    lines = []
    for name, (finished, secs) in spans.items():
        record = tmp_path / "records" / f"{name}.json"
        record.parent.mkdir(parents=True, exist_ok=True)
        record.write_text(json.dumps({"spec": {"device": "cpu"}, "machine": {"capability": "AVX2"}, "finished": finished,
                                      "result": {"epochs": [{"seconds": secs - 60.0}], "seconds": secs,
                                                 "threads": 1, "precision": "fp32"}}))
        lines.append(cell("t", name, "bev_map", measured=1.0, n_seeds=1, source=str(record), precision="fp32"))
    write_table_csv(tmp_path / "t.csv", lines)
    [(tid, c)] = report.training_compute(report.read_csvs(tmp_path))
    assert c["timed"] == 3 and c["wall_seconds"] == pytest.approx(9000.0)
    assert c["elapsed_seconds"] == pytest.approx(1.5 * 3600 + 1800.0)
    assert c["epoch_seconds"] == pytest.approx(9000.0 - 180.0)
    assert "| t | 3 | 2.45 | 3 | 2.50 | 2.00 |" in report._compute_text(report.read_csvs(tmp_path))


def test_cpu_pairing_splits_the_paired_gain_by_where_each_seed_pair_trained(tmp_path):
    """Seed pairs whose two arms trained on different CPUs (from the run records each seed's source names)
    are counted apart, with the paired gain over each subset and Welch's t between them; a CPU without
    its model name is unknown; one-CPU tables get no such section."""
    import json

    spec = {"t": {"ID": "t", "ROWS": [{"NAME": "no KD", "MODEL": "small", "KD": None},
                                      {"NAME": "A", "MODEL": "small", "KD": "a"}]}}
    cpus = {("no KD", 0): "X", ("no KD", 1): "X", ("no KD", 2): "Y", ("no KD", 3): "Y", ("no KD", 4): "Y",
            ("A", 0): "X", ("A", 1): "X", ("A", 2): "X", ("A", 3): "X"}
    values = {"no KD": [10.0, 11.0, 12.0, 13.0, 9.0], "A": [11.0, 13.0, 12.5, 13.5]}

    def write(cpu_of):
        lines = []
        for row, vals in values.items():
            sources = []
            for seed in range(len(vals)):
                rec = tmp_path / "records" / f"{row.replace(' ', '_')}-{seed}.json"
                rec.parent.mkdir(parents=True, exist_ok=True)
                rec.write_text(json.dumps({"spec": {"device": "cpu"}, "machine": {"cpu": cpu_of[row, seed],
                                                                                  "capability": "AVX512"},
                                           "result": {}}))
                sources.append(str(rec))
            if row == "A":
                sources.append("distilled from 2 trainings of the same teacher spec")
            lines.append(cell("t", row, "bev_map", measured=sum(vals) / len(vals), measured_std=1.0,
                              n_seeds=len(vals), seeds=list(range(len(vals))), values=vals, source=sources))
        write_table_csv(tmp_path / "t.csv", lines)
        return report.read_csvs(tmp_path)

    # seed 4 has no KD run: not a pair
    [(tid, row, metric, p)] = report.cpu_pairing(write(cpus), spec)
    assert (tid, row, metric) == ("t", "A", "bev_map")
    assert p["same"] == [0, 1] and p["unknown"] == []
    assert p["cross"] == {("X (CPU AVX512)", "Y (CPU AVX512)"): [2, 3]}
    # same-CPU differences 1.0 and 2.0, cross-CPU differences 0.5 and 0.5
    assert p["same_t"]["n"] == 2 and p["same_t"]["mean"] == pytest.approx(1.5)
    assert p["same_t"]["ci"][0] == pytest.approx(1.5 - 12.7062 * 0.5, abs=1e-3)
    assert p["cross_t"]["mean"] == pytest.approx(0.5) and p["cross_t"]["sd"] == pytest.approx(0.0)
    # Welch of the cross against the same differences: (0.5 - 1.5) / sqrt(0 + 0.5 / 2) = -2, df 1
    t, df, pval = p["split"]
    assert t == pytest.approx(-2.0) and df == pytest.approx(1.0) and pval == pytest.approx(0.2952, abs=1e-3)
    text = report.cpu_pairing_text(report.read_csvs(tmp_path), spec)
    assert "| t | A | bev_map | seeds 0,1: +1.50 [" in text
    assert "| X (CPU AVX512) / Y (CPU AVX512): 2 | seeds 2,3: +0.50 [+0.50, +0.50] (n=2), p 0.000 | -2.00 (1.0), 0.295 |" in text
    assert "confounded" not in text
    # a CPU without its model name is not known; a lone pair shows its difference
    [(*_, p)] = report.cpu_pairing(write({**cpus, ("A", 1): "", ("no KD", 3): "X"}), spec)
    assert p["same"] == [0, 3] and p["unknown"] == [1] and p["cross"] == {("X (CPU AVX512)", "Y (CPU AVX512)"): [2]}
    assert p["split"] is None
    text = report.cpu_pairing_text(report.read_csvs(tmp_path), spec)
    assert "Y (CPU AVX512): 1; CPU not kept: 1 | seeds 2: +0.50 (one pair, no interval) | needs 2 pairs" in text
    # every pair split the same way: the CPU is confounded with the arm, and the section says so
    text = report.cpu_pairing_text(write(
        {k: ("X" if k[0] == "A" else "Y") for k in cpus}), spec)
    assert "| none | X (CPU AVX512) / Y (CPU AVX512): 4 |" in text and "confounded with the arm" in text
    assert "t / A (bev_map)." in text
    # every pair on one CPU: nothing to say
    assert report.cpu_pairing(write({k: "X" for k in cpus}), spec) == []
    assert report.cpu_pairing_text(report.read_csvs(tmp_path), spec) == ""


def test_kd_partners_pair_each_kd_row_with_the_no_kd_row_of_its_model():
    spec = {"ROWS": [{"NAME": "teacher", "MODEL": "big", "TEACHER": True},
                     {"NAME": "w/o KD", "MODEL": "small"},
                     {"NAME": "PD", "MODEL": "small", "KD": "pd"},
                     {"NAME": "orphan", "MODEL": "other", "KD": "pd"},
                     {"NAME": "FitNet", "MODEL": "small", "KD": "fitnet"}]}
    partners = report.kd_partners(spec)
    assert partners == [("PD", "w/o KD"), ("FitNet", "w/o KD")]
    piv = {"PD": {"bev_map": {"measured": "1"}, "miou": {"measured": "2"}},
           "w/o KD": {"bev_map": {"measured": "0"}},
           "FitNet": {"3d_map": {"measured": "3"}}}
    # a cell is yielded only where both rows have it, KD rows in order, then 3D / BEV / mIoU
    assert [(row, metric) for row, metric, *_ in report.partner_cells(piv, partners)] == [("PD", "bev_map")]
    piv["w/o KD"]["3d_map"] = {"measured": "0"}
    assert [(row, metric) for row, metric, *_ in report.partner_cells(piv, partners)] == [
        ("PD", "bev_map"), ("FitNet", "3d_map")]
