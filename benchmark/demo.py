"""The main job on the embedded synthetic dataset (``make demo``).

    python -m benchmark.demo --out output/demo [--frames 160] [--epochs 3] [--seed 0]

1. generates the embedded synthetic dataset in the KITTI layout and prints its label statistics
   next to real KITTI's (``pcdet.datasets.synthetic.stats``), then builds the KITTI info pickles;
2. trains, with ``tools/train.py`` and the configs a user would use, the PointPillars teacher
   (``tools/cfgs/synthetic_models/pointpillar.yaml``), the 4x student without distillation
   (``pointpillar_4x.yaml``) and the 4x student distilled with PointDistiller
   (``kd_cfgs/synthetic/pointpillar_4x_pointdistiller.yaml``, teacher = the checkpoint of step 2);
   each run evaluates itself on the val split at the end;
3. measures params and GMACs (``benchmark.complexity``) and CPU latency (``benchmark.latency``) of
   the three models on a synthetic val frame, and prints one table: params, GMACs, latency, BEV and
   3D mAP (mean of the Car/Pedestrian/Cyclist moderate AP R40, as in the papers);
4. writes ``demo_results.csv``, ``demo_map_vs_gmacs.png`` and ``demo_bev.png`` (bird's-eye views
   of the first val frames: points, ground truth and the three models' predictions side by side)
   under ``--out``.

Each training shows its progress live (epochs, iterations, loss, ETA) and keeps its output in
``--out/logs/<model>.log``; the precision it chose (``MIXED_PRECISION: auto``) is in that log.

The schedule is shortened (``--epochs``, ``--frames``) so the whole job fits in minutes on a
laptop CPU; the accuracies are therefore those of briefly trained models. Every figure printed was
measured by this run on the EMBEDDED SYNTHETIC dataset, not on real KITTI.
"""
import argparse
import json
import sys
import time
from pathlib import Path

import tqdm

from pcdet.datasets.synthetic import stats as synthetic_stats
from pcdet.datasets.synthetic.build import generate_dataset
from pcdet.utils.paths import REPO_ROOT, realdata_dir

BANNER = "[embedded synthetic dataset] "
TEACHER_CFG = REPO_ROOT / "tools" / "cfgs" / "synthetic_models" / "pointpillar.yaml"
STUDENT_CFG = REPO_ROOT / "tools" / "cfgs" / "synthetic_models" / "pointpillar_4x.yaml"
KD_CFG = REPO_ROOT / "kd_cfgs" / "synthetic" / "pointpillar_4x_pointdistiller.yaml"
CSV_FIELDS = ["model", "cfg_file", "params_M", "gmacs", "latency_ms", "latency_iqr_ms", "latency_weights", "bev_map",
              "3d_map", "train_seconds", "precision", "threads", "dataset", "run_dir"]


def _log(msg):
    print(BANNER + msg, flush=True)


def _generate(data_dir, frames, seed, workers, val_fraction, fmt):
    """Write the embedded dataset in layout ``fmt`` with a progress bar; returns the seconds taken."""
    t0 = time.perf_counter()
    with tqdm.tqdm(total=frames, desc="frames", dynamic_ncols=True) as bar:
        generate_dataset(data_dir, frames, seed=seed, workers=workers, fmt=fmt, val_fraction=val_fraction,
                         progress=lambda done, total: bar.update(done - bar.n))
    return time.perf_counter() - t0


def _train(cfg, out, data_dir, tag, epochs, seed, workers, logs, extra=(), live=True):
    """Run tools/train.py in a child process (its own logger and threads), its progress bars shown
    live and its output kept in ``logs/<tag>.log``; returns (run dir, seconds)."""
    from pcdet.train_utils.experiment import output_dir_for
    from pcdet.train_utils.launcher import TrainingFailed, run_training, train_command

    cmd = train_command(cfg, "--epochs", epochs, "--seed", seed, "--workers", workers, "--extra_tag", tag,
                        "--output_root", out / "runs", *([] if live else ["--no_progress"]), *extra,
                        "--set", "DATA_CONFIG.DATA_PATH", data_dir)
    log = logs / f"{tag}.log"
    log.unlink(missing_ok=True)
    try:
        seconds = run_training(cmd, log, cwd=out, live=live)
    except TrainingFailed as err:
        raise SystemExit(f"{BANNER}training {cfg}: {err}") from None
    return output_dir_for(cfg, tag, out / "runs"), seconds


def _final_ckpt(run, epochs):
    """The checkpoint a demo training wrote after its last epoch."""
    from pcdet.train_utils.train_utils import checkpoint_path

    return checkpoint_path(run["run_dir"] / "ckpt", epochs)


def _metrics(run_dir, epochs):
    path = run_dir / "eval" / f"epoch_{epochs}" / "val" / "metrics.json"
    if not path.is_file():
        raise SystemExit(f"{BANNER}no evaluation found at {path}")
    return json.loads(path.read_text())


def _plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for kind, marker in (("3d_map", "o"), ("bev_map", "s")):
        ax.scatter([r["gmacs"] for r in rows], [r[kind] for r in rows], marker=marker,
                   label={"3d_map": "3D mAP", "bev_map": "BEV mAP"}[kind])
        for r in rows:
            ax.annotate(r["model"], (r["gmacs"], r[kind]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("GMACs per frame")
    ax.set_ylabel("mAP (moderate, R40)")
    ax.set_title("PointPillars KD demo, EMBEDDED SYNTHETIC dataset", fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(REPO_ROOT / "output" / "demo"))
    p.add_argument("--frames", type=int, default=160)
    p.add_argument("--val_fraction", type=float, default=0.34)
    p.add_argument("--epochs", type=int, default=3, help="epochs of each of the three trainings")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--latency_runs", type=int, default=10)
    p.add_argument("--skip_stats", action="store_true", help="do not print the comparison with real KITTI labels")
    p.add_argument("--bev_frames", type=int, default=3, help="val frames in the bird's-eye-view picture")
    p.add_argument("--no_progress", action="store_true", help="trainings without live progress bars (logs only)")
    args = p.parse_args(argv)
    out = Path(args.out).resolve()
    data_dir = out / "synthetic_kitti"
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()

    # 1. data ---------------------------------------------------------------------------------
    _log(f"generating {args.frames} frames (seed {args.seed}) into {data_dir}")
    seconds = _generate(data_dir, args.frames, args.seed, args.workers, args.val_fraction, "kitti")
    _log(f"{args.frames} frames in {seconds:.1f} s ({args.frames / seconds:.1f} frames/s, "
         f"{args.workers} worker processes)")
    real = realdata_dir() / "kitti_label2_all" / "training" / "label_2"
    if args.skip_stats:
        pass
    elif real.is_dir():
        res = synthetic_stats.compare(data_dir, real)
        _log(f"label statistics, synthetic ({args.frames} frames) vs real KITTI "
             f"({res.get('real_frames', 'all')} frames):")
        print(synthetic_stats.format_table(res))
        (out / "synthetic_vs_real_kitti.json").write_text(json.dumps(res, indent=1) + "\n")
    else:
        _log(f"real KITTI labels not found at {real} (set PCDET_REALDATA): no comparison printed")

    from pcdet.datasets.kitti.kitti_dataset import create_kitti_infos
    from pcdet.train_utils.experiment import load_experiment_cfg

    cfg = load_experiment_cfg(TEACHER_CFG)
    summary = create_kitti_infos(cfg.DATA_CONFIG, cfg.CLASS_NAMES, data_dir, workers=args.workers)
    _log(f"info pickles: {summary['kitti_infos_train.pkl']} train / {summary['kitti_infos_val.pkl']} val frames")

    # 2. three trainings --------------------------------------------------------------------
    runs = {}
    plan = [("teacher", TEACHER_CFG, ()), ("student_4x", STUDENT_CFG, ()), ("student_4x_pointdistiller", KD_CFG, None)]
    for name, cfg_file, extra in plan:
        if extra is None:  # the KD run distils from the teacher trained above
            teacher_ckpt = _final_ckpt(runs["teacher"], args.epochs)
            extra = ("--teacher_ckpt", str(teacher_ckpt))
        _log(f"training {name} ({cfg_file.relative_to(REPO_ROOT)}), {args.epochs} epochs; log {logs / (name + '.log')}")
        run_dir, secs = _train(cfg_file, out, data_dir, name, args.epochs, args.seed, args.workers, logs, extra,
                               live=not args.no_progress)
        run_info = json.loads((run_dir / "train_stats.json").read_text()).get("run", {})
        precision = run_info.get("precision", {})
        runs[name] = {"cfg_file": cfg_file, "run_dir": run_dir, "seconds": secs,
                      "metrics": _metrics(run_dir, args.epochs)["metrics"], "precision": precision.get("name", ""),
                      "threads": run_info.get("threads", "")}
        _log(f"  {name}: trained and evaluated in {secs:.0f} s; precision {precision.get('name')} "
             f"({precision.get('reason')}), {run_info.get('threads')} threads")

    # 3. complexity, latency, accuracy ---------------------------------------------------------
    from benchmark import complexity, latency
    from benchmark.csv_io import write_rows
    from pcdet.train_utils.experiment import experiment_name
    from pcdet.datasets.kitti.eval import moderate_map

    val_ids = (data_dir / "ImageSets" / "val.txt").read_text().split()
    frame = data_dir / "training" / "velodyne" / f"{val_ids[0]}.bin"
    model_cfgs = {"teacher": TEACHER_CFG, "student_4x": STUDENT_CFG, "student_4x_pointdistiller": STUDENT_CFG}
    _log(f"latency: {args.latency_runs} round-robin runs per model on val frame {frame.name}, CPU, with the "
         f"trained teacher and no-KD student weights")
    trained = [_final_ckpt(runs[name], args.epochs) for name in ("teacher", "student_4x")]
    lat_rows = latency.measure([TEACHER_CFG, STUDENT_CFG], frame, device="cpu", runs=args.latency_runs,
                               warmup=2, ckpts=trained)
    lat = {r["model"]: r for r in lat_rows if r["stage"] == "end_to_end"}
    rows = []
    for name, run in runs.items():
        comp = complexity.measure(model_cfgs[name], frame)
        lat_row = lat[experiment_name(model_cfgs[name])]
        rows.append({
            "model": name, "cfg_file": str(Path(run["cfg_file"]).relative_to(REPO_ROOT)),
            "params_M": round(comp["params_M"], 4), "gmacs": round(comp["gmacs"], 3),
            "latency_ms": lat_row["median_ms"], "latency_iqr_ms": lat_row["iqr_ms"],
            # the KD student shares the no-KD student's architecture: its latency was timed with those weights
            "latency_weights": str(_final_ckpt(runs["teacher" if name == "teacher" else "student_4x"],
                                               args.epochs).relative_to(out)),
            "bev_map": round(moderate_map(run["metrics"], "bev"), 2), "3d_map": round(moderate_map(run["metrics"], "3d"), 2),
            "train_seconds": round(run["seconds"], 1), "precision": run["precision"], "threads": run["threads"],
            "dataset": "embedded synthetic (KITTI format)",
            "run_dir": str(run["run_dir"].relative_to(out)),
        })

    # 4. report --------------------------------------------------------------------------------
    _log(f"results ({args.epochs} epochs each, {summary['kitti_infos_val.pkl']} val frames; mAP = mean of "
         "Car/Ped/Cyc moderate AP R40):")
    print(f"{'model':28s} {'params M':>9s} {'GMACs':>7s} {'CPU ms':>8s} {'BEV mAP':>8s} {'3D mAP':>7s} {'train s':>8s}")
    for r in rows:
        print(f"{r['model']:28s} {r['params_M']:9.3f} {r['gmacs']:7.2f} {r['latency_ms']:8.1f} "
              f"{r['bev_map']:8.2f} {r['3d_map']:7.2f} {r['train_seconds']:8.0f}")
    csv_path = out / "demo_results.csv"
    write_rows(csv_path, rows, CSV_FIELDS)
    png_path = out / "demo_map_vs_gmacs.png"
    _plot(rows, png_path)
    bev_path = _bev_pictures(runs, data_dir, args.epochs, out / "demo_bev.png", args.bev_frames)
    _log(f"wrote {csv_path}, {png_path} and {bev_path}; total {time.perf_counter() - t_start:.0f} s")
    return rows


def _bev_pictures(runs, data_dir, epochs, path, n_frames):
    """Bird's-eye views of the first val frames: ground truth and each model's predictions side by side
    (the ``result.pkl`` of each run's final evaluation), drawn by ``pcdet.utils.bev_plot``."""
    from pcdet.datasets import build_dataloader
    from pcdet.train_utils.experiment import load_experiment_cfg
    from pcdet.utils.bev_plot import dataset_frames, load_predictions, plot_bev_grid

    cfg = load_experiment_cfg(TEACHER_CFG, ["DATA_CONFIG.DATA_PATH", str(data_dir)])
    dataset, _, _ = build_dataloader(cfg.DATA_CONFIG, cfg.CLASS_NAMES, 1, False, workers=0, training=False)
    preds = {name: load_predictions(run["run_dir"] / "eval" / f"epoch_{epochs}" / "val" / "result.pkl")
             for name, run in runs.items()}
    frames = dataset_frames(dataset, count=n_frames)
    _log(f"bird's-eye views of {len(frames)} val frames -> {path}")
    return plot_bev_grid(frames, preds, path, list(cfg.CLASS_NAMES), cfg.DATA_CONFIG.POINT_CLOUD_RANGE,
                         score_thresh=0.3, title=f"EMBEDDED SYNTHETIC dataset, {epochs} epochs per model: "
                         "ground truth (dashed) and predictions (score >= 0.3)")


if __name__ == "__main__":
    main()
    sys.exit(0)
