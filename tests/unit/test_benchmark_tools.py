"""benchmark.complexity reproduces the papers' params/GMACs on a real KITTI frame; benchmark.latency
writes the documented rows (timings themselves are never asserted: they live in benchmark CSVs)."""
import pytest
import torch

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


def test_point_files_of_kitti_get_the_camera_fov_crop_of_training(real_kitti, tmp_path):
    """A real KITTI frame with its calib beside it is cropped to image 2's field of view, transcribed
    here from the calib file (OpenPCDet ``get_fov_flag``: projected inside the image, depth >= 0);
    without a calib it stays whole."""
    import shutil

    import numpy as np

    from pcdet.datasets.kitti.kitti_utils import read_png_size
    from pcdet.datasets.point_cloud_files import PointCloudFileDataset
    from pcdet.train_utils.experiment import load_experiment_cfg

    cfg = load_experiment_cfg(REPO_ROOT / "tools" / "cfgs" / "kitti_models" / "second.yaml")
    frame = real_kitti / "training" / "velodyne" / "000000.bin"
    pts = np.fromfile(frame, dtype=np.float32).reshape(-1, 4)
    mats = {}
    for line in (real_kitti / "training" / "calib" / "000000.txt").read_text().splitlines():
        if ":" in line:
            key, vals = line.split(":", 1)
            mats[key] = np.array([float(v) for v in vals.split()])
    p2, r0, tr = mats["P2"].reshape(3, 4), mats["R0_rect"].reshape(3, 3), mats["Tr_velo_to_cam"].reshape(3, 4)
    rect = (r0 @ (tr @ np.c_[pts[:, :3], np.ones(len(pts))].T)).T
    img = (p2 @ np.c_[rect, np.ones(len(rect))].T).T
    u, v, depth = img[:, 0] / img[:, 2], img[:, 1] / img[:, 2], img[:, 2] - p2[2, 3]
    h, w = read_png_size(real_kitti / "training" / "image_2" / "000000.png")
    keep = (u >= 0) & (u < w) & (v >= 0) & (v < h) & (depth >= 0)
    got = PointCloudFileDataset(cfg.DATA_CONFIG, cfg.CLASS_NAMES, [frame]).load_points(frame)
    assert 0 < len(got) == int(keep.sum()) < len(pts)
    np.testing.assert_array_equal(got, pts[keep])

    alone = tmp_path / "velodyne" / "000000.bin"  # no calib beside it: the whole sweep
    alone.parent.mkdir()
    shutil.copy(frame, alone)
    assert len(PointCloudFileDataset(cfg.DATA_CONFIG, cfg.CLASS_NAMES, [alone]).load_points(alone)) == len(pts)


def test_latency_eager_and_onnxruntime_in_one_run(real_kitti):
    pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (requirements.txt installs it)")
    frame = real_kitti / "training" / "velodyne" / "000000.bin"
    cfgs = [SYN / "pointpillar_16x.yaml", SYN / "pointpillar_16x.yaml"]
    rows = latency.measure(cfgs, frame, device="cpu", runs=2, warmup=1, runtimes=("eager", "onnxruntime"))
    e2e = {(r["runtime"], i % 2): r for i, r in enumerate(r for r in rows if r["stage"] == "end_to_end")}
    assert set(e2e) == {("eager", 0), ("eager", 1), ("onnxruntime", 0), ("onnxruntime", 1)}
    assert e2e["onnxruntime", 0]["speedup_vs_first"] == 1.0  # each runtime against its own first model
    ort_stages = {r["stage"] for r in rows if r["runtime"] == "onnxruntime"}
    assert "dense_part_ort" in ort_stages and "backbone_2d" not in ort_stages and "vfe" in ort_stages
    assert all(r["median_ms"] > 0 for r in rows if r["stage"] == "dense_part_ort")


def test_paired_speedup_is_the_median_of_per_round_ratios(real_kitti, monkeypatch):
    """Two models timed round-robin: the paired speed-up is the median over rounds of the ratio of their
    times in the same round (fake clock: rounds 8/4, 12/3, 10/5 -> ratios 2, 4, 2 -> 2), the plain one
    the ratio of the medians (10 / 4 = 2.5)."""
    frame = real_kitti / "training" / "velodyne" / "000000.bin"
    cfgs = [SYN / "pointpillar_16x.yaml", SYN / "pointpillar_16x.yaml"]
    # the order measure() calls them: round 0 model 0 then 1, round 1 model 1 then 0, round 2 model 0 then 1
    clock = iter([8.0, 4.0, 3.0, 12.0, 10.0, 5.0])
    monkeypatch.setattr(latency._Model, "run_once", lambda self: {"end_to_end": next(clock)})
    rows = latency.measure(cfgs, frame, device="cpu", runs=3, warmup=0)
    e2e = [r for r in rows if r["stage"] == "end_to_end"]
    assert e2e[1]["speedup_paired_median"] == pytest.approx(2.0) and e2e[1]["speedup_vs_first"] == pytest.approx(2.5)
    assert e2e[0]["speedup_paired_median"] == pytest.approx(1.0)


def test_latency_runs_at_the_asked_thread_count_and_records_it(real_kitti, monkeypatch):
    """``threads``: the timed runs see that many torch threads, every row records it and the machine,
    and the caller's count comes back afterwards; 0 threads is refused."""
    frame = real_kitti / "training" / "velodyne" / "000000.bin"
    cfgs = [SYN / "pointpillar_16x.yaml"]
    seen = []
    monkeypatch.setattr(latency._Model, "run_once",
                        lambda self: seen.append(torch.get_num_threads()) or {"end_to_end": 1.0})
    before = torch.get_num_threads()
    rows = latency.measure(cfgs, frame, device="cpu", runs=2, warmup=0, threads=1)
    assert seen == [1, 1] and torch.get_num_threads() == before
    assert all(r["threads"] == 1 and r["machine"].startswith("CPU capability ") for r in rows)
    with pytest.raises(ValueError, match="threads must be >= 1"):
        latency.measure(cfgs, frame, device="cpu", runs=1, warmup=0, threads=0)
    with pytest.raises(SystemExit):
        latency.main(["--cfg_file", str(cfgs[0]), "--frame", str(frame), "--threads", "0"])


def test_latency_times_trained_weights_given_per_config(real_kitti, monkeypatch, tmp_path):
    """``ckpts``: one checkpoint per config (a plain one or a distillation run's, whose student is
    timed), loaded strictly before the deploy preparation and named in every row's ``weights``; a
    count that does not match the configs, or another config's checkpoint, is refused."""
    from pcdet.models import build_network
    from pcdet.models.model_template import CheckpointMismatchError
    from pcdet.train_utils.experiment import load_experiment_cfg

    frame = real_kitti / "training" / "velodyne" / "000000.bin"
    cfg_file = SYN / "pointpillar_16x.yaml"
    probe = latency._Model(cfg_file, frame, torch.device("cpu"), mode="eval")  # the tool's own build
    model = probe.model
    with torch.no_grad():
        model.dense_head.conv_cls.bias.fill_(1.25)
    ckpt = tmp_path / "trained.pth"
    torch.save({"model_state": model.state_dict()}, ckpt)
    seen = []
    monkeypatch.setattr(latency._Model, "run_once", lambda self: seen.append(
        float(self.model.dense_head.conv_cls.bias[0])) or {"end_to_end": 1.0})
    rows = latency.measure([cfg_file], frame, device="cpu", runs=1, warmup=0, ckpts=[ckpt])
    assert seen == [1.25] and all(r["weights"] == str(ckpt.resolve()) for r in rows)
    rows = latency.measure([cfg_file], frame, device="cpu", runs=1, warmup=0)
    assert seen[-1] != 1.25 and all(r["weights"] == "initialised" for r in rows)
    kd = tmp_path / "kd_run.pth"  # a distillation run's checkpoint: the student inside the wrapper's state
    torch.save({"model_state": {f"student.{k}": v for k, v in model.state_dict().items()}}, kd)
    latency.measure([cfg_file], frame, device="cpu", runs=1, warmup=0, ckpts=[kd])
    assert seen[-1] == 1.25
    with pytest.raises(ValueError, match="one per config"):
        latency.measure([cfg_file, cfg_file], frame, device="cpu", runs=1, warmup=0, ckpts=[ckpt])
    other = build_network(load_experiment_cfg(SYN / "pointpillar_4x.yaml").MODEL, 3, probe.dataset)
    torch.save({"model_state": other.state_dict()}, tmp_path / "other.pth")
    with pytest.raises(CheckpointMismatchError, match="other.pth"):
        latency.measure([cfg_file], frame, device="cpu", runs=1, warmup=0, ckpts=[tmp_path / "other.pth"])
