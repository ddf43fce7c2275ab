"""End-to-end and per-module inference latency of one or more detectors on one frame.

    python -m benchmark.latency --cfg_file A --cfg_file B ... [--frame PATH] [--device cpu|cuda]
                                [--runs 30] [--warmup 5] [--runtime eager] [--runtime onnxruntime]
                                [--threads N [--threads M ...]] [--ckpt CKPT ...] [--csv OUT]

End to end = voxelisation (the config's data processor) + collation + transfer + model forward
including post-processing (NMS) = "voxelisation to boxes". Per module = forward hooks around each
top-level module of the detector; ``post_processing`` is what remains of the forward. On CUDA
every timestamp synchronises first. Models are timed round-robin (run r of every model before run
r+1, round r starting at model r so that none always runs first) so machine noise hits all of them
alike; each model's speed-up is over the first model, as a ratio of medians measured in the same run.
Reports median and inter-quartile range (IQR), and
next to each speed-up the model's parameters, GMACs (total, dense-only as the paper's counter counts
them, and sparse-convolution) and MAC ratios over the first (``benchmark.complexity``).

``--mode deploy`` (default) times every model as a deployment runtime would run it: BatchNorm
folded into the preceding layers, zero pads folded into the convolutions, channels-last 2D
convolutions and the anchor head decoding only the anchors above the score threshold
(``pcdet.models.model_utils.inference_utils``; predicted boxes unchanged, tested). With the
initialised weights the tool builds by default, almost no anchor passes the threshold, so its
decoding and NMS times are a lower bound of a trained model's; ``--ckpt`` (once per ``--cfg_file``, in
order; a plain checkpoint or a distillation run's, whose student is timed) times trained weights
instead, and every row's ``weights`` names them. ``--mode eval`` times the plain eval-mode PyTorch
modules.

``--runtime onnxruntime`` (repeatable with ``eager``, the default) runs each detector's dense part,
from the scattered BEV map to the head maps, in ONNX Runtime (exported from the prepared model,
:mod:`pcdet.models.model_utils.onnx_utils`; ``TensorrtExecutionProvider`` / ``CUDAExecutionProvider``
on CUDA when installed) and the rest (voxelisation, VFE / scatter or sparse encoder, box decoding,
NMS) in PyTorch; its stage ``dense_part_ort`` is the session's run. Every (model, runtime) pair is
timed in the same round-robin, and each speed-up is over the first model *of the same runtime*:
``speedup_vs_first`` as the ratio of the two medians, ``speedup_paired_median`` (with its IQR) as the
median over rounds of the ratio of the two models' times in the same round, which cancels the noise
that hits both alike (the more robust figure on a noisy machine).
ONNX Runtime gets as many intra-op threads as torch has.

``--threads N`` (repeatable) times everything with N torch (and ONNX Runtime) threads, one complete
round-robin run per thread count, one after the other: speed-ups compare models within the same
thread count and run, never across them. Default: torch's current thread count. Every row records its
``threads`` and the machine (``cpu``: the CPU capability torch dispatches to and whether it has
AVX512-BF16 / AMX; on CUDA the GPU's name), since narrow convolutions scale differently with threads
and kernels than wide ones.
"""
import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

from pcdet.datasets.point_cloud_files import PointCloudFileDataset
from pcdet.models import build_network, load_data_to_device
from pcdet.train_utils.experiment import experiment_name, load_experiment_cfg, resolve_device
from pcdet.models.model_utils.inference_utils import prepare_for_inference
from benchmark.complexity import default_frame
from benchmark.complexity import measure as measure_complexity
from benchmark.csv_io import write_rows
from pcdet.utils.paths import repo_relative


class _Timer:
    """Timestamps around each top-level module (forward pre-hook / hook)."""

    def __init__(self, model, device):
        self.device, self.times, self._start = device, {}, {}
        self.handles = []
        for name, module in model.named_children():
            if name in ("module_list",) or not isinstance(module, torch.nn.Module):
                continue
            self.handles.append(module.register_forward_pre_hook(self._pre(name)))
            self.handles.append(module.register_forward_hook(self._post(name)))

    def now(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def _pre(self, name):
        def fn(module, inputs):
            self._start[name] = self.now()
        return fn

    def _post(self, name):
        def fn(module, inputs, output):
            self.times[name] = self.now() - self._start[name]
        return fn


class _Model:
    def __init__(self, cfg_file, frame, device, mode="deploy", runtime="eager", ckpt=None):
        self.cfg = load_experiment_cfg(cfg_file)
        self.name = experiment_name(cfg_file)
        self.dataset = PointCloudFileDataset(self.cfg.DATA_CONFIG, self.cfg.CLASS_NAMES, [frame])
        self.model = build_network(self.cfg.MODEL, len(self.cfg.CLASS_NAMES), self.dataset)
        self.weights = "initialised"
        if ckpt is not None:
            from pcdet.kd.wrapper import load_student_weights

            # as tools/test.py: a plain checkpoint or the student of a KD one; strict (another config: an error)
            load_student_weights(self.model, str(ckpt))
            self.weights = repo_relative(ckpt)
        self.model = self.model.to(device).eval()
        if mode == "deploy":
            self.model = prepare_for_inference(self.model)
        elif mode != "eval":
            raise ValueError(f"latency mode {mode!r}: use deploy or eval")
        cx = measure_complexity(cfg_file, frame)
        self.gmacs, self.gmacs_dense, self.gmacs_sparse, self.params_m = (
            cx["gmacs"], cx["gmacs_dense"], cx["gmacs_sparse"], cx["params_M"])
        self.points = self.dataset.load_points(frame)
        self.device = device
        self.runtime = runtime
        self.timer = _Timer(self.model, device)
        self.runner = self.model
        self.providers = "pytorch"
        if runtime == "onnxruntime":
            self.runner = _OrtRunner(self.model, self._batch(), device)
            self.providers = "+".join(self.runner.ort.providers)  # what the session really uses
        elif runtime != "eager":
            raise ValueError(f"latency runtime {runtime!r}: use eager or onnxruntime")
        self.records = []

    def _batch(self):
        sample = self.dataset.prepare_data({"points": self.points.copy(), "frame_id": "latency"})
        return load_data_to_device(self.dataset.collate_batch([sample]), self.device)

    def run_once(self):
        t = self.timer
        t.times = {}
        t0 = t.now()
        batch = self._batch()
        t1 = t.now()
        with torch.no_grad():
            self.runner(batch)
        t2 = t.now()
        rec = {"voxelisation": t1 - t0, "end_to_end": t2 - t0}
        rec.update(t.times)
        if self.runtime == "onnxruntime":
            rec["dense_part_ort"] = self.runner.last_dense_s
        rec["post_processing"] = (t2 - t1) - sum(v for k, v in rec.items() if k not in ("voxelisation", "end_to_end"))
        return rec


class _OrtRunner:
    """The model with its dense part in ONNX Runtime; ``last_dense_s``: the dense part's last run."""

    def __init__(self, model, sample_batch, device):
        from pcdet.models.model_utils.onnx_utils import DENSE_INPUT_KEY, OnnxRuntimeDetector, modules_before_dense_part

        with torch.no_grad():
            b = dict(sample_batch)
            for m in modules_before_dense_part(model):
                b = m(b)
        providers = (["TensorrtExecutionProvider", "CUDAExecutionProvider"] if device.type == "cuda" else []) + [
            "CPUExecutionProvider"]
        self.ort = OnnxRuntimeDetector(model, b[DENSE_INPUT_KEY], threads=torch.get_num_threads(), providers=providers)

    @property
    def last_dense_s(self):
        return self.ort.last_dense_s

    def __call__(self, batch):
        return self.ort(batch)


def _stats(values):
    arr = np.asarray(values) * 1000.0
    q1, med, q3 = np.percentile(arr, [25, 50, 75])
    return med, q3 - q1


def machine_label(device):
    """What the timings ran on: the GPU's name, or the CPU capability and its bf16 units."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    from pcdet.train_utils.precision import bf16_units, cpu_features

    f = cpu_features()
    units = bf16_units(f)
    isa = f" (oneDNN capped at {f['onednn_max_isa']})" if f["onednn_max_isa"] else ""
    return f"CPU capability {f['capability']}" + (f" with {units}" if units else "") + isa


def measure(cfg_files, frame=None, device="cpu", runs=30, warmup=5, mode="deploy", runtimes=("eager",),
            threads=None, ckpts=None):
    """Rows of every (runtime, model) pair timed in one round-robin run with ``threads`` torch threads
    (default: the current count; restored afterwards). ``ckpts``: one checkpoint per config, in order
    (None: every model keeps its initialised weights); each row's ``weights`` says which."""
    if ckpts is not None and len(ckpts) != len(cfg_files):
        raise ValueError(f"latency: {len(ckpts)} checkpoint(s) for {len(cfg_files)} config(s): give one per config")
    before = torch.get_num_threads()
    threads = int(threads) if threads is not None else before
    if threads < 1:
        raise ValueError(f"latency: threads must be >= 1, got {threads}")
    torch.set_num_threads(threads)
    try:
        return _measure(cfg_files, frame, device, runs, warmup, mode, runtimes, threads, ckpts)
    finally:
        torch.set_num_threads(before)


def _measure(cfg_files, frame, device, runs, warmup, mode, runtimes, threads, ckpts=None):
    device = resolve_device(device)
    machine = machine_label(device)
    frame = Path(frame) if frame else default_frame()
    runtimes = list(dict.fromkeys(runtimes))
    ckpts = list(ckpts) if ckpts is not None else [None] * len(cfg_files)
    models = [_Model(c, frame, device, mode, rt, ckpt=k) for rt in runtimes for c, k in zip(cfg_files, ckpts)]
    for _ in range(warmup):
        for m in models:
            m.run_once()
    for r in range(runs):  # round r starts at model r (mod count): no model always runs first
        for k in range(len(models)):
            m = models[(k + r) % len(models)]
            m.records.append(m.run_once())
    rows = []
    base = {}
    firsts = {}
    for m in models:
        firsts.setdefault(m.runtime, m)
    for m in models:
        first = firsts[m.runtime]
        stages = list(m.records[0].keys())
        for stage in stages:
            med, iqr = _stats([r[stage] for r in m.records])
            row = {"model": m.name, "runtime": m.runtime, "providers": m.providers, "stage": stage,
                   "median_ms": round(med, 3),
                   "iqr_ms": round(iqr, 3), "runs": runs, "device": str(device), "threads": threads,
                   "machine": machine, "mode": mode, "frame": frame.name, "weights": m.weights,
                   "speedup_vs_first": "", "speedup_paired_median": "", "speedup_paired_iqr": "", "gmacs": "",
                   "mac_ratio_vs_first": "", "params_m": "", "gmacs_dense": "", "gmacs_sparse": "",
                   "dense_mac_ratio_vs_first": ""}
            if stage == "end_to_end":
                base.setdefault(m.runtime, med)
                row["speedup_vs_first"] = round(base[m.runtime] / med, 3)
                # paired by round: run r of the first model over run r of this one (same moment, same noise)
                ratios = np.array([f["end_to_end"] / r["end_to_end"] for f, r in zip(first.records, m.records)])
                q1, q2, q3 = np.percentile(ratios, [25, 50, 75])
                row["speedup_paired_median"], row["speedup_paired_iqr"] = round(q2, 3), round(q3 - q1, 3)
                row["gmacs"] = round(m.gmacs, 3)
                row["mac_ratio_vs_first"] = round(first.gmacs / m.gmacs, 3)
                row.update(params_m=round(m.params_m, 4), gmacs_dense=round(m.gmacs_dense, 3),
                           gmacs_sparse=round(m.gmacs_sparse, 3),
                           dense_mac_ratio_vs_first=round(first.gmacs_dense / m.gmacs_dense, 3))
            rows.append(row)
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description="inference latency (median, IQR) of detectors on one frame")
    p.add_argument("--cfg_file", required=True, action="append")
    p.add_argument("--frame", default=None)
    p.add_argument("--device", choices=["cpu", "cuda", "auto"], default="cpu")
    p.add_argument("--runs", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--mode", choices=["deploy", "eval"], default="deploy",
                   help="deploy: BatchNorm and zero pads folded, channels-last, only anchors above the score "
                        "threshold decoded (default); eval: plain eval-mode modules")
    p.add_argument("--runtime", action="append", choices=["eager", "onnxruntime"], default=None,
                   help="repeat to time several runtimes in one run (default: eager)")
    p.add_argument("--threads", type=int, action="append", default=None,
                   help="torch / ONNX Runtime threads; repeat for one run per count (default: torch's current)")
    p.add_argument("--ckpt", action="append", default=None,
                   help="trained weights: repeat once per --cfg_file, in the same order (default: initialised)")
    p.add_argument("--csv", default=None, help="write all rows here")
    args = p.parse_args(argv)
    if args.frame is None and not default_frame().is_file():
        sys.exit(f"no --frame given and the default real frame {default_frame()} is absent")
    if args.ckpt is not None and len(args.ckpt) != len(args.cfg_file):
        p.error(f"--ckpt given {len(args.ckpt)} time(s) for {len(args.cfg_file)} --cfg_file(s): one per config")
    bad = [n for n in args.threads or [] if n < 1]
    if bad:
        p.error(f"--threads must be >= 1, got {bad}")
    rows = []
    for n in args.threads or [None]:
        rows += measure(args.cfg_file, args.frame, args.device, args.runs, args.warmup, args.mode,
                        tuple(args.runtime or ["eager"]), threads=n, ckpts=args.ckpt)
    print(f"machine: {rows[0]['machine']}")
    print(f"{'model':40s} {'runtime':12s} {'thr':>3s} {'stage':22s} {'median ms':>10s} {'IQR ms':>8s} "
          f"{'speed-up':>8s} {'paired':>7s} {'GMACs':>7s} {'MAC ratio':>9s}")
    for r in rows:
        print(f"{r['model']:40s} {r['runtime']:12s} {r['threads']:3d} {r['stage']:22s} {r['median_ms']:10.2f} "
              f"{r['iqr_ms']:8.2f} "
              f"{str(r['speedup_vs_first']):>8s} {str(r['speedup_paired_median']):>7s} {str(r['gmacs']):>7s} "
              f"{str(r['mac_ratio_vs_first']):>9s}")
    if args.csv:
        write_rows(args.csv, rows)
    return rows


if __name__ == "__main__":
    main()
