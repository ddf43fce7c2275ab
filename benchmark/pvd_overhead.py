"""Training-step cost of Point-to-Voxel KD on a segmentor: no KD vs PVD's output terms vs full PVD.

    python -m benchmark.pvd_overhead --data_path DIR [--cfg_file kd_cfgs/synthetic_seg/cylinder3d_0.5x_pvd.yaml]
                                     [--batch 2] [--steps 5] [--warmup 1] [--threads T] [--csv OUT]

``DIR`` is a dataset in the SemanticKITTI layout (the embedded one: ``python -m pcdet.datasets.synthetic
--format semantickitti``). One training step = the first ``--batch`` training samples of ``DIR`` (with
the config's augmentation, drawn once with a fixed seed), already collated, then forward + backward
(no optimizer step). Variants, all built from the KD config (student = its MODEL, teacher = its
KD.TEACHER.MODEL, PVD = its PVD method):

* ``no_kd``: the student alone (forward with its task loss, backward);
* ``pvd_output``: teacher forward + student + PVD with its two output terms only (BETA_POINT =
  BETA_VOXEL = 0);
* ``pvd``: teacher forward + student + PVD as configured.

Variants run round-robin (step r of every variant before step r+1), so machine noise hits all alike;
medians and IQR are reported, ratios are of medians from this one run; the affinity terms' share of
the PVD step is (pvd - pvd_output) / pvd. Weights are random (seeded): the step's cost does not
depend on training.
"""
import argparse
import time

import numpy as np
import torch
from easydict import EasyDict

from benchmark.csv_io import write_rows
from benchmark.kd_overhead import _stats
from pcdet.kd.methods import build_kd_methods
from pcdet.kd.wrapper import DistillationWrapper
from pcdet.models import build_network, load_data_to_device
from pcdet.train_utils.experiment import load_experiment_cfg
from pcdet.utils.paths import REPO_ROOT, repo_relative

DEFAULT_CFG = REPO_ROOT / "kd_cfgs" / "synthetic_seg" / "cylinder3d_0.5x_pvd.yaml"


class _Variant:
    def __init__(self, name, model):
        self.name, self.model, self.times = name, model, []

    def step(self, batch):
        view = dict(batch)
        self.model.train()
        self.model.zero_grad(set_to_none=True)
        t0 = time.perf_counter()
        ret, _, _ = self.model(view)
        ret["loss"].backward()
        self.times.append(time.perf_counter() - t0)


def _pvd_cfg(kd_cfg):
    for m in kd_cfg.METHODS:
        if m.NAME == "PVD":
            return EasyDict(m)
    raise SystemExit("the KD config has no PVD method")


def build_variants(cfg, dataset, seed=0):
    torch.manual_seed(seed)
    num_class = len(cfg.CLASS_NAMES)
    student = build_network(cfg.MODEL, num_class, dataset)
    teacher = build_network(cfg.KD.TEACHER.MODEL, num_class, dataset)
    pvd = _pvd_cfg(cfg.KD)
    output_only = EasyDict(dict(pvd, BETA_POINT=0.0, BETA_VOXEL=0.0))

    def wrap(method_cfg):
        return DistillationWrapper(student, teacher, build_kd_methods([method_cfg], student, teacher))

    return [_Variant("no_kd", student), _Variant("pvd_output", wrap(output_only)), _Variant("pvd", wrap(pvd))], pvd


def measure(data_path, cfg_file=DEFAULT_CFG, batch_size=2, steps=5, warmup=1, seed=0):
    from pcdet.datasets import build_dataloader

    cfg = load_experiment_cfg(cfg_file, ["DATA_CONFIG.DATA_PATH", str(data_path)])
    dataset, _, _ = build_dataloader(cfg.DATA_CONFIG, cfg.CLASS_NAMES, batch_size, False, workers=0, training=True)
    np.random.seed(seed)
    batch = load_data_to_device(dataset.collate_batch([dataset[i] for i in range(batch_size)]), torch.device("cpu"))
    variants, pvd = build_variants(cfg, dataset, seed)
    for _ in range(warmup):
        for v in variants:
            v.step(batch)
    for v in variants:
        v.times = []
    for _ in range(steps):
        for v in variants:
            v.step(batch)
    med = {v.name: _stats(v.times) for v in variants}
    info = {"points": int(batch["points"].shape[0]), "batch": batch_size, "steps": steps,
            "torch_threads": torch.get_num_threads(), "supervoxel_size": "x".join(str(s) for s in pvd.SUPERVOXEL_SIZE),
            "K": int(pvd.K), "N_P": int(pvd.N_P), "N_V": int(pvd.N_V), "cfg": repo_relative(cfg_file)}
    rows = []
    for v in variants:
        m, iqr = med[v.name]
        rows.append({"variant": v.name, "median_s": round(m, 4), "iqr_s": round(iqr, 4), "min_s": round(min(v.times), 4),
                     "ratio_vs_no_kd": round(m / med["no_kd"][0], 3), **info})
    share = (med["pvd"][0] - med["pvd_output"][0]) / med["pvd"][0]
    rows.append({"variant": "affinity_share_of_pvd_step", "median_s": "", "iqr_s": "", "min_s": "",
                 "ratio_vs_no_kd": "", "affinity_share": round(share, 3), **info})
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description="training-step cost of PVD on a segmentor (CPU)")
    p.add_argument("--data_path", required=True, help="a dataset in the SemanticKITTI layout")
    p.add_argument("--cfg_file", default=str(DEFAULT_CFG), help="KD config with a PVD method")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: leave torch's setting)")
    p.add_argument("--csv", default=None, help="write the rows here")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = measure(args.data_path, args.cfg_file, args.batch, args.steps, args.warmup, args.seed)
    info = rows[0]
    print(f"{info['points']} points in a batch of {info['batch']}; supervoxel {info['supervoxel_size']}, K={info['K']}, "
          f"N_P={info['N_P']}, N_V={info['N_V']}; {info['torch_threads']} torch threads; {info['steps']} interleaved steps")
    print(f"{'variant':12s} {'median s':>9s} {'IQR s':>7s} {'min s':>7s} {'/no_kd':>7s}")
    for r in rows[:-1]:
        print(f"{r['variant']:12s} {r['median_s']:9.3f} {r['iqr_s']:7.3f} {r['min_s']:7.3f} {r['ratio_vs_no_kd']:7.3f}")
    print(f"share of the affinity terms in the PVD step: {rows[-1]['affinity_share']:.3f}")
    if args.csv:
        write_rows(args.csv, rows)
    return rows


if __name__ == "__main__":
    main()
