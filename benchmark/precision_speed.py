"""Training-step time in fp32 and under bf16 autocast, and what ``MIXED_PRECISION: auto`` picks.

    python -m benchmark.precision_speed [--cfg_file CFG] [--frame PATH.bin] [--steps 10] [--warmup 2]
                                        [--emulate_avx2] [--csv OUT]

One step = forward with the task loss, backward and the optimiser step of the config's detector
on a batch of ``BATCH_SIZE_PER_GPU`` copies of one frame (data already voxelised). fp32 and bf16
steps alternate (step r of both before step r+1), so machine noise hits both alike; medians and
the ratio of medians come from this one run. Each row records the CPU capability torch reports,
whether the CPU has AVX512-BF16 / AMX, and the precision ``auto`` resolves to on it.

``--emulate_avx2`` also runs the measurement in a child process with ``ATEN_CPU_CAPABILITY=avx2``
and ``ONEDNN_MAX_CPU_ISA=AVX2``: torch and oneDNN then use their AVX2 kernels only, as on a CPU
without native bf16 (an approximation of such a CPU: same cores and caches, AVX2 code paths).

Without ``--frame`` the first real KITTI sample frame is used (``PCDET_REALDATA``).
"""
import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from easydict import EasyDict

from benchmark.complexity import default_frame
from benchmark.csv_io import write_rows
from pcdet.datasets.dataset import load_points_bin
from pcdet.datasets.point_cloud_files import PointCloudFileDataset
from pcdet.models import build_network, load_data_to_device
from pcdet.train_utils.experiment import load_experiment_cfg
from pcdet.train_utils.optimization import build_optimizer
from pcdet.train_utils.precision import cpu_features, resolve_precision
from pcdet.utils.paths import REPO_ROOT

DEFAULT_CFG = REPO_ROOT / "tools" / "cfgs" / "synthetic_models" / "pointpillar.yaml"
FALLBACK_BOXES = np.array([[12.0, 2.0, -0.9, 3.9, 1.6, 1.56, 0.3, 1], [20.0, -4.0, -0.7, 0.8, 0.6, 1.73, 1.2, 2],
                           [30.0, 5.0, -0.7, 1.76, 0.6, 1.73, -0.5, 3]], dtype=np.float32)
EMULATE_AVX2_ENV = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}


def _batch(cfg, frame):
    dataset = PointCloudFileDataset(cfg.DATA_CONFIG, cfg.CLASS_NAMES, [frame])
    samples = []
    for _ in range(int(cfg.OPTIMIZATION.BATCH_SIZE_PER_GPU)):
        s = dataset.prepare_data({"points": load_points_bin(frame), "frame_id": frame.stem})
        s["gt_boxes"] = FALLBACK_BOXES.copy()
        samples.append(s)
    return dataset, load_data_to_device(dataset.collate_batch(samples), torch.device("cpu"))


def measure(cfg_file=DEFAULT_CFG, frame=None, steps=10, warmup=2, seed=0):
    """Rows ``{"precision": "fp32"|"bf16", "median_s", "iqr_s", ...}`` for this process's CPU."""
    cfg = load_experiment_cfg(cfg_file)
    frame = default_frame() if frame is None else Path(frame)
    dataset, batch = _batch(cfg, frame)
    models = {}
    for name in ("fp32", "bf16"):
        torch.manual_seed(seed)
        model = build_network(cfg.MODEL, len(cfg.CLASS_NAMES), dataset)
        models[name] = (model, build_optimizer(model, cfg.OPTIMIZATION))
    times = {name: [] for name in models}

    def step(name):
        model, opt = models[name]
        model.train()
        b = dict(batch)
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=name == "bf16"):
            ret, _, _ = model(b)
        ret["loss"].float().backward()
        opt.step()
        return time.perf_counter() - t0

    for _ in range(warmup):
        for name in models:
            step(name)
    for _ in range(steps):
        for name in models:
            times[name].append(step(name))
    feats = cpu_features()
    auto = resolve_precision(EasyDict(MIXED_PRECISION="auto"), torch.device("cpu"))
    med = {n: float(np.median(t)) for n, t in times.items()}
    rows = []
    for name, t in times.items():
        q1, q3 = np.percentile(t, [25, 75])
        rows.append({"precision": name, "median_s": round(med[name], 4), "iqr_s": round(float(q3 - q1), 4),
                     "ratio_vs_fp32": round(med[name] / med["fp32"], 3), "steps": steps,
                     "batch_size": int(cfg.OPTIMIZATION.BATCH_SIZE_PER_GPU), "pillars": int(batch["voxels"].shape[0]),
                     "torch_threads": torch.get_num_threads(), "cpu_capability": feats["capability"],
                     "avx512_bf16": feats["avx512_bf16"], "amx_tile": feats["amx_tile"],
                     "onednn_max_isa": feats["onednn_max_isa"], "auto_picks": auto.name,
                     "cfg_file": os.path.relpath(cfg_file, REPO_ROOT), "frame": os.path.basename(str(frame))})
    return rows


def _child_rows(args, env_extra):
    cmd = [sys.executable, "-m", "benchmark.precision_speed", "--cfg_file", str(args.cfg_file), "--steps",
           str(args.steps), "--warmup", str(args.warmup), "--json_stdout"]
    if args.frame:
        cmd += ["--frame", str(args.frame)]
    out = subprocess.run(cmd, env=dict(os.environ, **env_extra), cwd=str(REPO_ROOT), check=True,
                         stdout=subprocess.PIPE, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cfg_file", default=str(DEFAULT_CFG))
    p.add_argument("--frame", default=None, help="point cloud .bin (default: the first real KITTI frame)")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--emulate_avx2", action="store_true", help="also measure with the AVX2 kernels only (child)")
    p.add_argument("--csv", default=None)
    p.add_argument("--json_stdout", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.frame is None and not default_frame().is_file():
        sys.exit(f"no --frame given and the default real frame {default_frame()} is absent")
    rows = [dict(r, kernels="native") for r in measure(args.cfg_file, args.frame, args.steps, args.warmup)]
    if args.json_stdout:
        print(json.dumps(rows))
        return rows
    if args.emulate_avx2:
        rows += [dict(r, kernels="AVX2 only (ATEN_CPU_CAPABILITY=avx2, ONEDNN_MAX_CPU_ISA=AVX2)")
                 for r in _child_rows(args, EMULATE_AVX2_ENV)]
    print(f"{'kernels':12s} {'capability':>10s} {'precision':>9s} {'median s':>9s} {'IQR s':>7s} {'/fp32':>6s} "
          f"{'auto picks':>10s}")
    for r in rows:
        print(f"{r['kernels'][:12]:12s} {r['cpu_capability']:>10s} {r['precision']:>9s} {r['median_s']:9.3f} "
              f"{r['iqr_s']:7.3f} {r['ratio_vs_fp32']:6.2f} {r['auto_picks']:>10s}")
    if args.csv:
        write_rows(args.csv, rows)
    return rows


if __name__ == "__main__":
    main()
