"""Training-step cost of distillation: no KD vs plain feature KD vs PointDistiller, on one frame.

    python -m benchmark.kd_overhead [--frame PATH] [--steps 5] [--warmup 1] [--csv OUT] [--threads T]
                                    [--cfg_file kd_cfgs/kitti/pointpillar_4x_pointdistiller.yaml] [--device cpu|cuda]

One training step = data already voxelised and on the device, then forward + backward (no
optimizer step); on CUDA each step's clock starts and stops after a synchronisation. Variants, all
built from the KD config (student = its MODEL, teacher = its KD.TEACHER.MODEL, PointDistiller = its
first PointDistiller method):

* ``no_kd``: the student alone (forward with its task loss, backward);
* ``featurekd_sampled``: teacher forward + student + FeatureKD on the same top-N nodes PointDistiller
  samples (isolates the cost of the graph, the KNN and the reweighting);
* ``featurekd_all``: the same with FeatureKD on every node;
* ``pointdistiller``: teacher forward + student + PointDistiller.

Variants run round-robin (step r of every variant before step r+1), so machine noise hits all
alike; medians and IQR are reported, and ratios are of medians from this one run. ``knn`` is the
KNN time inside the PointDistiller step (forward only; the KNN has no backward) and its share of
that step. Weights are random (seeded): timings do not depend on training. Ground-truth boxes come
from the frame's KITTI label file when ``../label_2`` and ``../calib`` exist beside the velodyne
folder, otherwise from a fixed set of three boxes.
"""
import argparse
import copy
import sys
import time
from pathlib import Path

import numpy as np
import torch

from benchmark.complexity import default_frame
from pcdet.datasets.dataset import load_points_bin
from pcdet.datasets.point_cloud_files import PointCloudFileDataset
from pcdet.kd.methods import build_kd_methods
from pcdet.kd.wrapper import DistillationWrapper
from pcdet.models import load_data_to_device
from pcdet.models.detectors import build_detector
from pcdet.train_utils.experiment import load_experiment_cfg
from pcdet.utils.paths import REPO_ROOT
from benchmark.csv_io import write_rows

DEFAULT_CFG = REPO_ROOT / "kd_cfgs" / "kitti" / "pointpillar_4x_pointdistiller.yaml"
FALLBACK_BOXES = np.array(
    [[12.0, 2.0, -0.9, 3.9, 1.6, 1.56, 0.3, 1], [20.0, -4.0, -0.7, 0.8, 0.6, 1.73, 1.2, 2],
     [30.0, 5.0, -0.7, 1.76, 0.6, 1.73, -0.5, 3]], dtype=np.float32)


def _frame_boxes(frame, class_names):
    """LiDAR gt boxes (M, 8) of the frame from its KITTI label + calib, or None."""
    root = Path(frame).resolve().parent.parent
    label, calib = root / "label_2" / (Path(frame).stem + ".txt"), root / "calib" / (Path(frame).stem + ".txt")
    if not (label.is_file() and calib.is_file()):
        return None
    from pcdet.utils import box_utils
    from pcdet.utils.calibration_kitti import Calibration
    from pcdet.utils.object3d_kitti import get_label_anno

    anno = get_label_anno(label, allow_score=False)
    keep = np.array([n in class_names for n in anno["name"]], dtype=bool)
    if not keep.any():
        return None
    cam = np.concatenate([anno["location"], anno["dimensions"], anno["rotation_y"][:, None]], axis=1)[keep]
    lidar = box_utils.boxes3d_kitti_camera_to_lidar(cam, Calibration(calib))
    cls = np.array([class_names.index(n) + 1 for n in anno["name"][keep]], dtype=np.float32)
    return np.concatenate([lidar, cls[:, None]], axis=1).astype(np.float32)


def _method_cfg(kd_cfg, name):
    for m in kd_cfg.METHODS:
        if m.NAME == name:
            return copy.deepcopy(m)
    raise SystemExit(f"the KD config has no {name} method")


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _Variant:
    def __init__(self, name, model, pd_method=None, device=torch.device("cpu")):
        self.name, self.model, self.pd_method, self.device = name, model, pd_method, device
        self.times, self.knn = [], []

    def step(self, batch):
        b = dict(batch)
        self.model.train()
        self.model.zero_grad(set_to_none=True)
        _sync(self.device)
        t0 = time.perf_counter()
        ret, _, _ = self.model(b)
        ret["loss"].backward()
        _sync(self.device)
        dt = time.perf_counter() - t0
        self.times.append(dt)
        if self.pd_method is not None:
            self.knn.append(self.pd_method.last_profile.get("knn_s", 0.0))
        return dt


def build_variants(cfg, dataset, seed=0, device=torch.device("cpu")):
    torch.manual_seed(seed)
    num_class = len(cfg.CLASS_NAMES)
    student = build_detector(model_cfg=cfg.MODEL, num_class=num_class, dataset=dataset)
    teacher = build_detector(model_cfg=cfg.KD.TEACHER.MODEL, num_class=num_class, dataset=dataset)
    pd_cfg = _method_cfg(cfg.KD, "PointDistiller")
    fkd_sampled = {"NAME": "FeatureKD", "WEIGHT": 1.0, "FEATURE": pd_cfg.FEATURE, "N": pd_cfg.N,
                   "IMPORTANCE": pd_cfg.get("IMPORTANCE", "auto")}
    fkd_all = {"NAME": "FeatureKD", "WEIGHT": 1.0, "FEATURE": pd_cfg.FEATURE, "N": None}
    from easydict import EasyDict

    def wrap(method_cfgs):
        methods = build_kd_methods([EasyDict(m) for m in method_cfgs], student, teacher)
        return DistillationWrapper(student, teacher, methods), methods

    w_fs, _ = wrap([fkd_sampled])
    w_fa, _ = wrap([fkd_all])
    w_pd, pd_methods = wrap([pd_cfg])
    for w in (student, w_fs, w_fa, w_pd):
        w.to(device)
    return [_Variant("no_kd", student, device=device), _Variant("featurekd_sampled", w_fs, device=device),
            _Variant("featurekd_all", w_fa, device=device),
            _Variant("pointdistiller", w_pd, pd_methods[0], device=device)], pd_cfg


def _numba_threads():
    import numba

    return int(numba.get_num_threads())


def _stats(values):
    arr = np.asarray(values, dtype=np.float64)
    q1, med, q3 = np.percentile(arr, [25, 50, 75])
    return med, q3 - q1


def measure(cfg_file=DEFAULT_CFG, frame=None, steps=5, warmup=1, seed=0, device="cpu"):
    device = torch.device(device)
    cfg = load_experiment_cfg(cfg_file)
    frame = Path(frame) if frame else default_frame()
    dataset = PointCloudFileDataset(cfg.DATA_CONFIG, cfg.CLASS_NAMES, [frame])
    sample = dataset.prepare_data({"points": load_points_bin(frame), "frame_id": frame.stem})
    boxes = _frame_boxes(frame, list(cfg.CLASS_NAMES))
    sample["gt_boxes"] = boxes if boxes is not None else FALLBACK_BOXES
    batch = load_data_to_device(dataset.collate_batch([sample]), device)
    variants, pd_cfg = build_variants(cfg, dataset, seed, device)
    for _ in range(warmup):
        for v in variants:
            v.step(batch)
    for v in variants:
        v.times, v.knn = [], []
    for _ in range(steps):
        for v in variants:
            v.step(batch)
    med = {v.name: _stats(v.times) for v in variants}
    pd = variants[-1]
    knn_med, knn_iqr = _stats(pd.knn)
    base = med["featurekd_sampled"][0]
    info = {"frame": frame.name, "pillars": int(batch["voxels"].shape[0]), "steps": steps,
            "device": str(device), "torch_threads": torch.get_num_threads(), "numba_threads": _numba_threads(),
            "N": int(pd_cfg.N),
            "K": int(pd_cfg.get("K", 0) or 0),
            "C_S": pd.pd_method.c_s, "C_T": pd.pd_method.c_t, "gt_boxes": "label_2" if boxes is not None else "fixed"}
    rows = []
    for v in variants:
        m, iqr = med[v.name]
        rows.append({"variant": v.name, "median_s": round(m, 4), "iqr_s": round(iqr, 4), "min_s": round(min(v.times), 4),
                     "ratio_vs_featurekd_sampled": round(m / base, 3), "ratio_vs_no_kd": round(m / med["no_kd"][0], 3),
                     **info})
    rows.append({"variant": "pointdistiller_knn", "median_s": round(knn_med, 4), "iqr_s": round(knn_iqr, 4),
                 "min_s": round(min(pd.knn), 4), "ratio_vs_featurekd_sampled": "",
                 "ratio_vs_no_kd": "", "knn_share_of_pointdistiller_step": round(knn_med / med["pointdistiller"][0], 3),
                 **info})
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description="training-step cost of KD methods on one frame")
    p.add_argument("--cfg_file", default=str(DEFAULT_CFG), help="KD config with a PointDistiller method")
    p.add_argument("--frame", default=None, help="point cloud .bin (default: the first real KITTI frame)")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None,
                   help="torch and numba threads (default: leave torch's setting); 1 is steadier on a busy machine")
    p.add_argument("--csv", default=None, help="write the rows here")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: torch sees no CUDA device")
    if args.threads:
        import numba

        torch.set_num_threads(args.threads)
        numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))
    if args.frame is None and not default_frame().is_file():
        sys.exit(f"no --frame given and the default real frame {default_frame()} is absent")
    rows = measure(args.cfg_file, args.frame, args.steps, args.warmup, args.seed, args.device)
    info = rows[0]
    print(f"frame {info['frame']}: {info['pillars']} pillars; N={info['N']} K={info['K']} C_S={info['C_S']} "
          f"C_T={info['C_T']}; {info['torch_threads']} torch / {info['numba_threads']} numba threads; "
          f"{info['steps']} interleaved steps")
    print(f"{'variant':22s} {'median s':>9s} {'IQR s':>7s} {'min s':>7s} {'/featurekd':>10s} {'/no_kd':>7s}")
    for r in rows:
        print(f"{r['variant']:22s} {r['median_s']:9.3f} {r['iqr_s']:7.3f} {r['min_s']:7.3f} "
              f"{str(r['ratio_vs_featurekd_sampled']):>10s} {str(r['ratio_vs_no_kd']):>7s}")
    print(f"KNN share of the PointDistiller step: {rows[-1]['knn_share_of_pointdistiller_step']:.3f}")
    if args.csv:
        write_rows(args.csv, rows)
    return rows


if __name__ == "__main__":
    main()
