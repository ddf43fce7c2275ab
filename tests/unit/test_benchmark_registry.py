"""The benchmark table registry, the paper preset's settings and the comparison-CSV rules."""
import csv
from pathlib import Path

import pytest
import torch

from benchmark import registry
from benchmark.__main__ import main as benchmark_main
from benchmark.metrics import check_metric
from benchmark.results_csv import FIELDS, MissingSourceError, cell, write_table_csv
from pcdet.train_utils.experiment import load_experiment_cfg
from pcdet.train_utils.optimization import build_optimizer, build_scheduler

RUNNABLE_NOW = {"pd_t1", "pd_t2", "pd_t3", "pd_t5", "pd_app_t2", "pd_app_t3", "pd_app_t4", "pd_app_d2", "pd_paired",
                "pvd_t1", "pvd_t4", "pvd_t5", "pvd_f6",
                "pd_paired_baselines", "pd_paired_second"}


@pytest.fixture(scope="module")
def tables():
    return registry.load_tables()


@pytest.fixture(scope="module")
def paper():
    return registry.load_presets()["paper"]


def test_list_names_all_sixteen_tables_the_paired_ones_and_what_the_others_wait_for(capsys):
    assert benchmark_main(["list"]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line for line in out.splitlines() if line and line.split()[0] in registry.TABLE_IDS}
    assert set(lines) == set(registry.TABLE_IDS) and len(registry.TABLE_IDS) == 19  # 16 of the papers + 3 paired
    for tid, line in lines.items():
        assert line.split()[1] == ("yes" if tid in RUNNABLE_NOW else "no"), line
    assert "detector:PointRCNN" in out and "segmentation:SPVCNN" in out and "segmentation:MinkUNet" in out
    assert "segmentation:Cylinder3D" not in out and "detector:SECOND" not in out


def test_every_table_follows_the_schema(tables):
    for tid, t in tables.items():
        assert t["ID"] == tid and t["ROWS"]
        for row in t["ROWS"]:
            for metric, value in row["PAPER"].items():
                check_metric(metric, tid)
                assert isinstance(value, (int, float)) and value != 0, (tid, row["NAME"], metric)


def test_unknown_keys_and_metrics_are_errors_naming_the_file(tmp_path):
    bad = tmp_path / "x.yaml"
    bad.write_text("ID: x\nTITLE: t\nPAPER_SOURCE: s\nTASK: detection\nDATASET: kitti\nROWS:\n"
                   "  - {NAME: a, MODEL: pointpillar, PAPER: {bev_mAP: 1.0}}\n")
    with pytest.raises(ValueError, match=r"x.yaml.*unknown metric 'bev_mAP'"):
        registry.load_table(bad)
    bad.write_text("ID: x\nTITLE: t\nPAPER_SOURCE: s\nTASK: detection\nDATASET: kitti\nROWZ: []\nROWS: [{NAME: a}]\n")
    with pytest.raises(registry.RegistryError, match=r"x.yaml: unknown config key\(s\) 'ROWZ' \(did you mean ROWS\?\)"):
        registry.load_table(bad)


def test_runnable_status_comes_from_the_code_registries(tables, paper, monkeypatch):
    ok, status = registry.table_status(tables["pd_t1"], paper)
    assert "PointPillars 4x, PointDistiller" in ok and "SECOND 4x, PointDistiller" in ok
    assert "PointRCNN 8x, PointDistiller" not in ok and "detector:PointRCNN" in status["PointRCNN 8x, PointDistiller"]
    caps = registry.capabilities() - {"kd:PointDistiller"}
    ok, status = registry.table_status(tables["pd_t5"], paper, caps)
    assert ok == ["LD no, RL no (4x student, no KD)"] or not ok  # the table itself needs kd:PointDistiller
    assert all("kd:PointDistiller" in m for m in status.values())


def _paper_cfgs(tables, paper, tid):
    t = tables[tid]
    ok, _ = registry.table_status(t, paper)
    out = []
    for row in t["ROWS"]:
        if row["NAME"] in ok:
            model, kd = registry.config_paths(t, row, paper)
            out.append((row, load_experiment_cfg(kd or model)))
    return out


def test_paper_preset_carries_the_papers_settings_exactly(tables, paper):
    """Appendix B.1 and the authors' settings: widths, depth, N / K / tau, AdamW 1e-3 -> 1e-7 over 80
    epochs, flip / rotation / shuffle augmentation."""
    widths = {"pointpillar": (64, [64, 128, 256], [128, 128, 128]), "pointpillar_4x": (32, [32, 64, 128], [64, 64, 64]),
              "pointpillar_16x": (16, [16, 32, 64], [32, 32, 32])}
    layers = {"pointpillar_l8": [2, 3, 3], "pointpillar_l5": [1, 2, 2], "pointpillar_l3": [1, 1, 1]}
    pd_settings = {"pointpillar_4x": (6000, 128, 1e-2), "pointpillar_16x": (12000, 128, 1e-4)}
    second = {"second": ([16, 16, 32, 64, 64], 128, [128, 256]), "second_4x": ([8, 8, 16, 32, 32], 64, [64, 128]),
              "second_16x": ([4, 4, 8, 16, 16], 32, [32, 64])}
    seen = set()
    for tid in ("pd_t1", "pd_t2", "pd_t5", "pd_app_t3", "pd_app_t2", "pd_app_d2"):
        for row, cfg in _paper_cfgs(tables, paper, tid):
            seen.add((tid, row["NAME"]))
            m = row["MODEL"]
            bb = cfg.MODEL.BACKBONE_2D
            opt = cfg.OPTIMIZATION
            if m in second:  # SECOND: every width scaled, the 3D encoder's included
                w3d, out, bev = second[m]
                assert (list(cfg.MODEL.BACKBONE_3D.WIDTHS), cfg.MODEL.BACKBONE_3D.OUT_CHANNELS) == (w3d, out)
                assert (list(bb.NUM_FILTERS), list(bb.LAYER_NUMS)) == (bev, [5, 5])
                assert cfg.DATA_CONFIG.DATA_PROCESSOR[-1].VOXEL_SIZE == [0.05, 0.05, 0.1]
                # students: the appendix's 1e-3; the teacher: the release's 1.8e-3
                assert (opt.OPTIMIZER, opt.LR, opt.FINAL_LR, opt.NUM_EPOCHS) == (
                    "adamw_onecycle", 1.8e-3 if m == "second" else 1e-3, 1e-7, 80)
            else:
                vfe = cfg.MODEL.VFE.NUM_FILTERS[0]
                if m in widths:
                    assert (vfe, list(bb.NUM_FILTERS), list(bb.NUM_UPSAMPLE_FILTERS)) == widths[m], (tid, row["NAME"])
                    assert list(bb.LAYER_NUMS) == [3, 5, 5]
                else:
                    assert (vfe, list(bb.NUM_FILTERS)) == (64, [64, 128, 256]) and list(bb.LAYER_NUMS) == layers[m]
                assert cfg.DATA_CONFIG.DATA_PROCESSOR[-1].VOXEL_SIZE == [0.16, 0.16, 4]
                assert (opt.OPTIMIZER, opt.LR, opt.FINAL_LR, opt.NUM_EPOCHS) == ("adamw_onecycle", 1e-3, 1e-7, 80)
            assert cfg.DATA_CONFIG.DATA_PATH == "data/kitti"
            assert opt.WEIGHT_DECAY > 0 and opt.GRAD_NORM_CLIP > 0  # L2 regularisation, gradient clipping
            augs = {a.NAME: a for a in cfg.DATA_CONFIG.DATA_AUGMENTOR.AUG_CONFIG_LIST}
            assert {"random_world_flip", "random_world_rotation"} <= set(augs)
            procs = {p.NAME: p for p in cfg.DATA_CONFIG.DATA_PROCESSOR}
            assert procs["shuffle_points"].SHUFFLE_ENABLED["train"] is True
            if row.get("KD") and m in second:
                teacher = cfg.KD.TEACHER.MODEL
                assert list(teacher.BACKBONE_3D.WIDTHS) == [16, 16, 32, 64, 64]
                assert list(teacher.BACKBONE_2D.NUM_FILTERS) == [128, 256]
                # the release's get_knn_voxel_backbone: both BEV levels, N 256, K 256 (4x) / 128 (16x), tau 1e-4
                assert [(e.NAME, e.FEATURE, e.IMPORTANCE, e.N, e.K, e.TAU, e.ADAPTER_CHANNELS) for e in cfg.KD.METHODS] == [
                    ("PointDistiller", f, "channel_max", 256, 128 if m == "second_16x" else 256, 1e-4, 32)
                    for f in ("spatial_features_1x", "spatial_features_2x")]
            elif row.get("KD"):
                teacher = cfg.KD.TEACHER.MODEL
                assert teacher.VFE.NUM_FILTERS == [64] and list(teacher.BACKBONE_2D.LAYER_NUMS) == [3, 5, 5]
            if (row.get("KD") or "").startswith("pointdistiller") and m not in second:
                pd = cfg.KD.METHODS[0]
                assert pd.NAME == "PointDistiller" and pd.FEATURE == "pillar_features" and pd.IMPORTANCE == "num_points"
                n, k, tau = pd_settings.get(m, (6000, 128, 1e-2))
                # LD only: the release's form of the loss without reweighting, 5e-4 * ||G_T - G_S||_2
                ld_only = row["KD"] == "pointdistiller_ld_only"
                weight, form = (5e-4, "l2_norm") if ld_only else (2.0, "mean_square")
                assert (pd.N, pd.K, pd.TAU, pd.WEIGHT) == (n, k, tau, weight), (tid, row["NAME"])
                assert pd.get("LD_LOSS", "mean_square") == form
                assert pd.LOCAL_DISTILLATION == (row["KD"] != "pointdistiller_rl_only")
                assert pd.REWEIGHT == (row["KD"] != "pointdistiller_ld_only")
    assert len(seen) == 10 + 10 + 4 + 7 + 4 + 3  # PointPillars and SECOND rows
    # the schedule really runs AdamW from 1e-3 (peak) down to 1e-7 at the last step
    cfg = _paper_cfgs(tables, paper, "pd_app_t3")[1][1]
    model = torch.nn.Linear(2, 2)
    opt = build_optimizer(model, cfg.OPTIMIZATION)
    sched = build_scheduler(opt, 10, cfg.OPTIMIZATION.NUM_EPOCHS, cfg.OPTIMIZATION)
    assert isinstance(opt, torch.optim.AdamW)
    lrs = []
    for _ in range(10 * 80):
        opt.step()
        sched.step()
        lrs.append(sched.get_last_lr()[0])
    assert max(lrs) == pytest.approx(1e-3, rel=1e-3) and lrs[-1] == pytest.approx(1e-7, rel=1e-2)


def test_no_measured_cell_without_a_source_run_directory(tmp_path):
    with pytest.raises(MissingSourceError, match="pd_t5 / r / bev_map"):
        cell("pd_t5", "r", "bev_map", paper=66.4, measured=60.0)
    with pytest.raises(MissingSourceError):
        cell("pd_t5", "r", "bev_map", measured=0.0, source=[])
    ok = cell("pd_t5", "r", "bev_map", paper=66.4, measured=60.0, measured_std=1.0, n_seeds=3, source=["a", "b"],
              dataset="d", preset="mini", device="cpu")
    assert ok["source"] == "a;b" and ok["unit"] == "AP R40 (%)"
    empty = cell("pd_t5", "r", "3d_map", paper=None)
    assert empty["paper"] == "" and empty["measured"] == "" and empty["source"] == ""  # missing is empty, not 0
    forged = dict(empty, measured=61.0)  # a hand-built line cannot slip through the writer either
    with pytest.raises(MissingSourceError):
        write_table_csv(tmp_path / "x.csv", [ok, forged])
    path = write_table_csv(tmp_path / "x.csv", [ok, empty])
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == FIELDS
        assert [r["measured"] for r in reader] == ["60.0", ""]


def test_kd_method_tables_wait_for_their_baselines_and_app_t1_rows_are_registered(tables, paper):
    caps = registry.capabilities() - {"kd:CRD"}
    ok, status = registry.table_status(tables["pd_t3"], paper, caps)
    assert not ok and all("kd:CRD" in why for why in status.values())  # a method comparison needs every method
    ok, _ = registry.table_status(tables["pd_t3"], paper)
    assert len(ok) == len(tables["pd_t3"]["ROWS"])
    kd_rows = {row["KD"] for row in tables["pd_app_t1"]["ROWS"]}
    assert {"overhaul", "crd", "multiframe"} <= kd_rows
    _, status = registry.table_status(tables["pd_app_t1"], paper)
    assert all("detector:CenterPoint" in why for why in status.values())


def test_csv_cells_record_sources_inside_the_repository_relative_to_it():
    """A cache written from another checkout stores its run directories by absolute path; the CSV cell
    records those inside this repository relative to it, and keeps the others as they are."""
    from pcdet.utils.paths import REPO_ROOT

    src = [str(REPO_ROOT / "output" / "cache" / "train" / "run-1"), "output/cache/train/run-2", "/elsewhere/run-3"]
    c = cell("t", "r", "bev_map", measured=1.0, source=src)
    assert c["source"] == ";".join([str(Path("output") / "cache" / "train" / "run-1"), src[1], src[2]])


def test_committed_result_csvs_name_files_relative_to_the_repository():
    """Provenance cells of ``benchmark/results/*.csv`` name their runs and configs relative to the
    repository (``repo_relative``), never by this or another machine's absolute path."""
    from pcdet.utils.paths import REPO_ROOT, repo_relative

    assert repo_relative(REPO_ROOT / "kd_cfgs" / "x.yaml") == str(Path("kd_cfgs") / "x.yaml")
    assert repo_relative("/elsewhere/run") == "/elsewhere/run"  # outside the repository: kept absolute
    results = sorted((REPO_ROOT / "benchmark" / "results").glob("*.csv"))
    assert results
    for path in results:
        with open(path, newline="") as f:
            for n, row in enumerate(csv.DictReader(f), start=2):
                for key, value in row.items():
                    for part in str(value).split(";"):  # a cell of several runs joins them with ';'
                        assert not part.startswith("/"), f"{path.name}:{n} column {key}: absolute path {part}"


def test_preset_precision_is_checked_and_the_paired_preset_pins_fp32(tmp_path):
    presets = registry.load_presets()
    assert presets["paired"]["MIXED_PRECISION"] == "none"  # arms trained on different CPUs share a precision
    bad = tmp_path / "presets.yaml"
    bad.write_text("p:\n  DATA: {KIND: synthetic}\n  MIXED_PRECISION: fp16\n")
    with pytest.raises(registry.RegistryError, match="MIXED_PRECISION 'fp16' unknown"):
        registry.load_presets(bad)
