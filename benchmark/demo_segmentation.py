"""The segmentation demo on the embedded synthetic dataset (``make demo TASK=segmentation``).

    python -m benchmark.demo_segmentation --out output/demo_segmentation [--frames 120] [--epochs 6] [--seed 0]

1. generates the embedded synthetic dataset in the SemanticKITTI layout (train frames in sequence 00,
   val frames in 08) and prints its class histogram next to the real SemanticKITTI scan's
   (``pcdet.datasets.synthetic.seg_stats``), naming the classes the scenes never contain;
2. trains, with ``tools/train.py`` and the configs a user would use, the CPU-scale Cylinder3D teacher
   (``tools/cfgs/synthetic_seg_models/cylinder3d.yaml``) and its 0.5x student
   (``cylinder3d_0.5x.yaml``); each run evaluates itself on the val split (the official mIoU, the
   present-class mIoU, per-class IoU);
3. measures params and GMACs (``benchmark.complexity``, pairs counted on the frame) and CPU latency
   (``benchmark.latency``, round-robin, deploy mode) of both models on the first val frame, as
   evaluation sees it (the front 90 degrees of the sweep), and prints one table with the
   student/teacher latency ratio next to the MAC ratio;
4. writes ``demo_segmentation_results.csv`` and ``demo_segmentation_bev.png`` (that val frame
   coloured by the ground truth and by each model's prediction, SemanticKITTI's colour map) under ``--out``.

The schedule is short (``--frames``, ``--epochs``) so the whole job fits in minutes on a laptop
CPU; every figure printed was measured by this run on the EMBEDDED SYNTHETIC dataset, not on real
SemanticKITTI.
"""
import argparse
import json
import sys
import time
from pathlib import Path


from benchmark.demo import _final_ckpt, _generate, _log, _train
from pcdet.utils.paths import REPO_ROOT, realdata_dir

TEACHER_CFG = REPO_ROOT / "tools" / "cfgs" / "synthetic_seg_models" / "cylinder3d.yaml"
STUDENT_CFG = REPO_ROOT / "tools" / "cfgs" / "synthetic_seg_models" / "cylinder3d_0.5x.yaml"
MODELS = (("teacher", TEACHER_CFG), ("student_0.5x", STUDENT_CFG))


def _metrics(run_dir, epochs):
    path = run_dir / "eval" / f"epoch_{epochs}" / "val" / "metrics.json"
    if not path.is_file():
        raise SystemExit(f"[embedded synthetic dataset] no evaluation found at {path}")
    return json.loads(path.read_text())


def _predict_frame(cfg_file, ckpt, data_dir, index=0):
    """(points (N, 4), ground truth (N,), prediction (N,)) of val frame ``index`` by the checkpoint."""
    import torch

    from pcdet.datasets import build_dataloader
    from pcdet.models import build_network, load_data_to_device
    from pcdet.train_utils.experiment import load_experiment_cfg

    cfg = load_experiment_cfg(cfg_file, ["DATA_CONFIG.DATA_PATH", str(data_dir)])
    dataset, _, _ = build_dataloader(cfg.DATA_CONFIG, cfg.CLASS_NAMES, 1, False, workers=0, training=False)
    model = build_network(cfg.MODEL, len(cfg.CLASS_NAMES), dataset)
    model.load_params_from_file(str(ckpt))
    model.eval()
    sample = dataset[index]
    batch = load_data_to_device(dataset.collate_batch([sample]), torch.device("cpu"))
    with torch.no_grad():
        preds, _ = model(batch)
    return sample["points"], sample["point_labels"], preds[0]["point_labels"].numpy(), sample["frame_id"]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(REPO_ROOT / "output" / "demo_segmentation"))
    p.add_argument("--frames", type=int, default=120)
    p.add_argument("--val_fraction", type=float, default=0.25)
    p.add_argument("--epochs", type=int, default=6, help="epochs of each of the two trainings")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--latency_runs", type=int, default=10)
    p.add_argument("--skip_stats", action="store_true", help="do not print the comparison with the real scan")
    p.add_argument("--no_progress", action="store_true", help="trainings without live progress bars (logs only)")
    args = p.parse_args(argv)
    out = Path(args.out).resolve()
    data_dir = out / "synthetic_semantickitti"
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()

    # 1. data ---------------------------------------------------------------------------------
    _log(f"generating {args.frames} frames (seed {args.seed}, SemanticKITTI layout) into {data_dir}")
    seconds = _generate(data_dir, args.frames, args.seed, args.workers, args.val_fraction, "semantickitti")
    _log(f"{args.frames} frames in {seconds:.1f} s")
    from pcdet.datasets.synthetic import seg_stats

    real = realdata_dir() / "semantickitti"
    if not args.skip_stats:
        rep = seg_stats.compare(data_dir, real if (real / "sequences").is_dir() else None)
        if "real" not in rep:
            _log(f"real SemanticKITTI scan not found at {real} (set PCDET_REALDATA): synthetic classes only")
        print(seg_stats.format_report(rep), end="")
        (out / "synthetic_vs_real_semantickitti.json").write_text(json.dumps(rep, indent=1) + "\n")

    # 2. two trainings --------------------------------------------------------------------------
    runs = {}
    for name, cfg_file in MODELS:
        _log(f"training {name} ({cfg_file.relative_to(REPO_ROOT)}), {args.epochs} epochs; log {logs / (name + '.log')}")
        run_dir, secs = _train(cfg_file, out, data_dir, name, args.epochs, args.seed, args.workers, logs,
                               live=not args.no_progress)
        stats = json.loads((run_dir / "train_stats.json").read_text())
        metrics = _metrics(run_dir, args.epochs)
        runs[name] = {"cfg_file": cfg_file, "run_dir": run_dir, "seconds": secs, "metrics": metrics["metrics"],
                      "dataset": metrics.get("dataset_note", ""), "threads": stats.get("run", {}).get("threads", ""),
                      "precision": stats.get("run", {}).get("precision", {}).get("name", "")}
        m = metrics["metrics"]
        _log(f"  {name}: trained and evaluated in {secs:.0f} s; mIoU {m['miou']:.2f} (present classes "
             f"{m['miou_present']:.2f})")

    # 3. complexity, latency -------------------------------------------------------------------
    from benchmark import complexity, latency
    from benchmark.csv_io import write_rows
    from pcdet.datasets.semantickitti import label_map
    from pcdet.datasets.semantickitti.semantickitti_dataset import SemanticKittiDataset
    from pcdet.train_utils.experiment import experiment_name, load_experiment_cfg

    frame = SemanticKittiDataset.first_val_frame(data_dir, load_experiment_cfg(TEACHER_CFG).DATA_CONFIG)
    _log(f"latency: {args.latency_runs} round-robin runs per model on val frame {frame.parent.parent.name}/"
         f"{frame.name}, CPU, deploy mode, the trained weights")
    lat_rows = latency.measure([TEACHER_CFG, STUDENT_CFG], frame, device="cpu", runs=args.latency_runs, warmup=2,
                               ckpts=[_final_ckpt(runs[name], args.epochs) for name, _ in MODELS])
    lat = {r["model"]: r for r in lat_rows if r["stage"] == "end_to_end"}
    rows = []
    for name, cfg_file in MODELS:
        comp = complexity.measure(cfg_file, frame)
        lr = lat[experiment_name(cfg_file)]
        m = runs[name]["metrics"]
        row = {"model": name, "cfg_file": str(cfg_file.relative_to(REPO_ROOT)), "params_M": round(comp["params_M"], 4),
               "gmacs": round(comp["gmacs"], 3), "latency_ms": lr["median_ms"], "latency_iqr_ms": lr["iqr_ms"],
               "miou": round(m["miou"], 2), "miou_present": round(m["miou_present"], 2), "acc": round(m["acc"], 2),
               "train_seconds": round(runs[name]["seconds"], 1), "precision": runs[name]["precision"],
               "threads": runs[name]["threads"], "frame_points": comp["num_points"], "frame_voxels": comp["num_voxels"],
               "dataset": runs[name]["dataset"], "run_dir": str(runs[name]["run_dir"].relative_to(out))}
        row.update({f"iou/{c}": round(m[f"iou/{c}"], 2) for c in label_map.CLASS_NAMES})
        rows.append(row)
    t, s = rows
    lat_ratio, mac_ratio = s["latency_ms"] / t["latency_ms"], s["gmacs"] / t["gmacs"]

    # 4. report --------------------------------------------------------------------------------
    n_val = len(json.loads((data_dir / "frames.json").read_text())) - sum(
        1 for v in json.loads((data_dir / "frames.json").read_text()).values() if v.startswith("00/"))
    _log(f"results ({args.epochs} epochs each, {n_val} val frames, {t['dataset']}):")
    print(f"{'model':14s} {'params M':>9s} {'GMACs':>7s} {'CPU ms':>8s} {'mIoU':>6s} {'mIoU pres.':>10s} {'train s':>8s}")
    for r in rows:
        print(f"{r['model']:14s} {r['params_M']:9.3f} {r['gmacs']:7.2f} {r['latency_ms']:8.1f} {r['miou']:6.2f} "
              f"{r['miou_present']:10.2f} {r['train_seconds']:8.0f}")
    print(f"student / teacher: latency {lat_ratio:.2f}x, MACs {mac_ratio:.2f}x, params "
          f"{s['params_M'] / t['params_M']:.2f}x")
    print("per-class IoU (teacher / student): " + ", ".join(
        f"{c} {t[f'iou/{c}']:.1f}/{s[f'iou/{c}']:.1f}" for c in label_map.CLASS_NAMES))
    fields = list(rows[0])
    csv_path = write_rows(out / "demo_segmentation_results.csv", rows, fields)
    points, gt, _, frame_id = _predict_frame(TEACHER_CFG, _final_ckpt(runs["teacher"], args.epochs), data_dir)
    panels = {f"ground truth ({frame_id})": gt}
    for name, cfg_file in MODELS:
        _, _, pred, _ = _predict_frame(cfg_file, _final_ckpt(runs[name], args.epochs), data_dir)
        panels[f"{name}: mIoU {runs[name]['metrics']['miou']:.1f} on val"] = pred
    from pcdet.utils.bev_plot import plot_semantic_bev

    png = plot_semantic_bev(points, panels, out / "demo_segmentation_bev.png",
                            title=f"EMBEDDED SYNTHETIC dataset (SemanticKITTI layout), {args.epochs} epochs per model")
    _log(f"wrote {csv_path} and {png}; total {time.perf_counter() - t_start:.0f} s")
    return rows


if __name__ == "__main__":
    main()
    sys.exit(0)
