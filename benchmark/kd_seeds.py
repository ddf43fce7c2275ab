"""Seed study: the same student trained with and without distillation over several seeds.

    python -m benchmark.kd_seeds --teacher_ckpt T.pth [--seeds 0 1 2]
        [--arm no_kd=tools/cfgs/synthetic_models/pointpillar_4x.yaml]
        [--arm pointdistiller=kd_cfgs/synthetic/pointpillar_4x_pointdistiller.yaml]
        [--output_root output/kd_seeds] [--csv benchmark/results/kd_seeds.csv] [--reuse ARM:SEED=RUN_DIR ...]

Every (arm, seed) is one ``tools/train.py`` run in a child process (``--seed S``, output
``<output_root>/<config path>/seed<S>``) followed by its final evaluation on the val split. The
study is resumable: a run whose final ``metrics.json`` exists is read, not retrained; a run with
checkpoints resumes from the newest (``--ckpt latest``). ``--reuse`` points an (arm, seed) at a run
trained elsewhere with the same config and seed.

Writes two CSVs: ``<csv>`` with one line per run (BEV / 3D mAP = mean of the Car / Pedestrian /
Cyclist moderate AP R40, Car moderate APs, training seconds when this study trained it, metrics
file), and ``<csv stem>_summary.csv`` with mean, sample std (ddof 1) and n per arm and metric,
plus each arm's difference from the first arm in units of the larger of the two stds. The
dataset note of the evaluation (e.g. the embedded synthetic dataset) is copied into every line.
"""
import argparse
import json
from pathlib import Path

from benchmark.csv_io import write_rows
from benchmark.experiments import final_metrics_file, mean_std
from pcdet.datasets.kitti.eval import moderate_map
from pcdet.train_utils.experiment import load_experiment_cfg, output_dir_for
from pcdet.utils.paths import REPO_ROOT, repo_relative

DEFAULT_ARMS = (
    "no_kd=tools/cfgs/synthetic_models/pointpillar_4x.yaml",
    "pointdistiller=kd_cfgs/synthetic/pointpillar_4x_pointdistiller.yaml",
)
RUN_FIELDS = ["arm", "seed", "bev_map", "3d_map", "car_bev_moderate", "car_3d_moderate", "train_seconds",
              "dataset", "config", "source"]
SUMMARY_FIELDS = ["arm", "metric", "mean", "std", "n", "diff_vs_first", "diff_in_std", "dataset"]
METRICS = ("bev_map", "3d_map", "car_bev_moderate", "car_3d_moderate")


def parse_arms(specs):
    arms = []
    for spec in specs:
        name, sep, cfg = spec.partition("=")
        if not sep or not name or not cfg:
            raise SystemExit(f"--arm wants NAME=CONFIG, got {spec!r}")
        path = Path(cfg)
        path = path if path.is_absolute() else (REPO_ROOT / path)
        if not path.is_file():
            raise SystemExit(f"--arm {name}: no config file {path}")
        arms.append((name, path))
    return arms


def train_one(cfg, seed, output_root, teacher_ckpt, extra, log_dir):
    """Train (or resume) one run; returns (run dir, seconds spent here or None when it was done)."""
    tag = f"seed{seed}"
    run_dir = output_dir_for(cfg, tag, output_root)
    if final_metrics_file(run_dir) is not None:
        return run_dir, None
    from pcdet.train_utils.launcher import TrainingFailed, run_training, train_command

    cmd = train_command(cfg, "--seed", seed, "--extra_tag", tag, "--output_root", output_root, "--no_progress", *extra)
    if teacher_ckpt and "KD" in load_experiment_cfg(cfg):
        cmd += ["--teacher_ckpt", str(teacher_ckpt)]
    if any((run_dir / "ckpt").glob("checkpoint_epoch_*.pth")):
        cmd += ["--ckpt", "latest"]
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"{cfg.stem}_{tag}.log"
    print(f"[kd_seeds] training {cfg.name} seed {seed} -> {run_dir} (log {log})", flush=True)
    try:
        seconds = run_training(cmd, log, cwd=Path.cwd())  # relative paths in the arguments stay the user's
    except TrainingFailed as err:
        raise SystemExit(f"[kd_seeds] {cfg} seed {seed}: {err}") from None
    return run_dir, seconds


def run_row(arm, seed, cfg, metrics_path, seconds):
    data = json.loads(Path(metrics_path).read_text())
    m = data["metrics"]
    return {"arm": arm, "seed": seed, "bev_map": round(moderate_map(m, "bev"), 2),
            "3d_map": round(moderate_map(m, "3d"), 2), "car_bev_moderate": round(m["Car_bev/moderate_R40"], 2),
            "car_3d_moderate": round(m["Car_3d/moderate_R40"], 2),
            "train_seconds": "" if seconds is None else round(seconds, 1), "dataset": data.get("dataset_note", ""),
            "config": repo_relative(cfg), "source": repo_relative(metrics_path)}


def summarise(rows, arm_names):
    """Mean / sample std per arm and metric; difference from the first arm in units of the larger std."""
    out = []
    stats = {}
    for arm in arm_names:
        for metric in METRICS:
            vals = [float(r[metric]) for r in rows if r["arm"] == arm]
            if vals:
                stats[arm, metric] = (*mean_std(vals), len(vals))
    notes = sorted({r["dataset"] for r in rows})
    for arm in arm_names:
        for metric in METRICS:
            if (arm, metric) not in stats:
                continue
            mean, std, n = stats[arm, metric]
            row = {"arm": arm, "metric": metric, "mean": round(mean, 2), "std": "" if std is None else round(std, 2), "n": n,
                   "diff_vs_first": "", "diff_in_std": "", "dataset": "; ".join(notes)}
            base = stats.get((arm_names[0], metric))
            if arm != arm_names[0] and base is not None:
                diff = mean - base[0]
                scale = max(std or 0.0, base[1] or 0.0)
                row["diff_vs_first"] = round(diff, 2)
                row["diff_in_std"] = round(diff / scale, 2) if scale else ""
            out.append(row)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arm", action="append", default=None, help="NAME=CONFIG (repeatable); the first is the reference")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--teacher_ckpt", default=None, help="teacher weights for the KD arms")
    p.add_argument("--output_root", default=str(REPO_ROOT / "output" / "kd_seeds"))
    p.add_argument("--csv", default=str(REPO_ROOT / "output" / "kd_seeds" / "kd_seeds.csv"))
    p.add_argument("--reuse", nargs="*", default=[], help="ARM:SEED=RUN_DIR of runs trained elsewhere")
    p.add_argument("--train_args", nargs=argparse.REMAINDER, default=[], help="passed on to tools/train.py")
    args = p.parse_args(argv)
    arms = parse_arms(args.arm or DEFAULT_ARMS)
    reuse = {}
    for spec in args.reuse:
        key, sep, path = spec.partition("=")
        arm, _, seed = key.partition(":")
        if not sep or not seed.isdigit():
            raise SystemExit(f"--reuse wants ARM:SEED=RUN_DIR, got {spec!r}")
        reuse[arm, int(seed)] = Path(path)
    output_root = Path(args.output_root).resolve()
    rows = []
    for seed in args.seeds:  # seed-major: a partial study still has both arms for its first seeds
        for name, cfg in arms:
            if (name, seed) in reuse:
                run_dir, seconds = reuse[name, seed].resolve(), None
            else:
                run_dir, seconds = train_one(cfg, seed, output_root, args.teacher_ckpt, args.train_args,
                                             output_root / "logs")
            metrics = final_metrics_file(run_dir)
            if metrics is None:
                raise SystemExit(f"[kd_seeds] no final evaluation in {run_dir}/eval")
            rows.append(run_row(name, seed, cfg, metrics, seconds))
            print(f"[kd_seeds] {name} seed {seed}: BEV mAP {rows[-1]['bev_map']}, 3D mAP {rows[-1]['3d_map']}"
                  f" ({rows[-1]['dataset']})", flush=True)
            write_rows(args.csv, rows, RUN_FIELDS)
    summary = summarise(rows, [n for n, _ in arms])
    csv = Path(args.csv)
    write_rows(csv.with_name(csv.stem + "_summary.csv"), summary, SUMMARY_FIELDS)
    for r in summary:
        extra = f"  diff {r['diff_vs_first']:+} ({r['diff_in_std']} std)" if r["diff_vs_first"] != "" else ""
        print(f"[kd_seeds] {r['arm']:16s} {r['metric']:17s} {r['mean']:6.2f} +- {r['std']} (n={r['n']}){extra}")
    return rows, summary


if __name__ == "__main__":
    main()
