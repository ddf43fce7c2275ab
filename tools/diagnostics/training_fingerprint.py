"""Fingerprint of a short fixed-seed training: the loss at every step and a checksum of the final weights.

    python tools/diagnostics/training_fingerprint.py --out fingerprint.json [--steps 30] [--data_path DIR]
    python tools/diagnostics/training_fingerprint.py --compare before.json after.json

Trains, each with ``tools/train.py`` in a child process with one torch / numba thread and no
dataloader workers, (a) the synthetic PointPillars teacher and (b) the synthetic 4x PointDistiller
student distilling from (a)'s final checkpoint, for ``--steps`` optimiser steps each (batch 2, so
``steps / (train frames / 2)`` epochs), on a small embedded synthetic dataset (generated here,
seed 0, unless ``--data_path`` names one). The loss trace is read from the run's tensorboard file
(``train/loss`` per step); the checksum is the SHA-256 of the final checkpoint's ``model_state``
tensors in key order (names, dtypes, shapes and bytes). A refactoring that must not change what is
computed keeps both identical: ``--compare`` says whether two fingerprints are.

Precision: ``--precision`` (default ``none``, fp32) is forced with ``--set``, so the fingerprint
does not depend on which CPU the ``auto`` setting meets.
"""
import argparse
import hashlib
import json
import os
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

TEACHER = REPO / "tools" / "cfgs" / "synthetic_models" / "pointpillar.yaml"
STUDENT_KD = REPO / "kd_cfgs" / "synthetic" / "pointpillar_4x_pointdistiller.yaml"


def read_scalars(event_dir, tag="train/loss"):
    """``[(step, value)]`` of ``tag`` from the tensorboard event files of ``event_dir`` (TFRecord
    framing: length, length CRC, ``Event`` proto, data CRC)."""
    from tensorboardX.proto.event_pb2 import Event

    out = []
    for path in sorted(Path(event_dir).glob("events.out.tfevents.*")):
        data = path.read_bytes()
        pos = 0
        while pos + 12 <= len(data):
            (length,) = struct.unpack("<Q", data[pos:pos + 8])
            record = data[pos + 12:pos + 12 + length]
            pos += 12 + length + 4
            event = Event.FromString(record)
            for v in event.summary.value:
                if v.tag == tag:
                    out.append((int(event.step), float(v.simple_value)))
    return out


def state_checksum(ckpt_path):
    """SHA-256 of every tensor of the checkpoint's ``model_state`` but the step counters named
    ``global_step`` (a buffer older checkpoints carry, never updated: always 0)."""
    import torch

    state = torch.load(ckpt_path, map_location="cpu", weights_only=False)["model_state"]
    h = hashlib.sha256()
    for key in sorted(k for k in state if k.rsplit(".", 1)[-1] != "global_step"):
        t = state[key].detach().cpu().contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.view(torch.int16).numpy().tobytes())
    return h.hexdigest()


def _train(cfg, data, out, epochs, precision, extra=()):
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", NUMBA_NUM_THREADS="1")
    cmd = [sys.executable, str(REPO / "tools" / "train.py"), "--cfg_file", str(cfg), "--epochs", str(epochs),
           "--seed", "0", "--workers", "0", "--no_eval", "--no_progress", "--output_root", str(out),
           "--data_path", str(data), *extra, "--set", "OPTIMIZATION.MIXED_PRECISION", precision]
    log = Path(out) / f"{Path(cfg).stem}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as f:
        rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=str(REPO)).returncode
    if rc != 0:
        raise SystemExit(f"training {cfg} failed (exit {rc}); log {log}")
    from pcdet.train_utils.experiment import output_dir_for

    run = output_dir_for(cfg, "default", out)
    from pcdet.train_utils.train_utils import epoch_checkpoints

    return run, epoch_checkpoints(run / "ckpt")[-1]


def fingerprint(steps, data_path, work, precision):
    from pcdet.datasets.kitti.kitti_dataset import create_kitti_infos
    from pcdet.datasets.synthetic.build import generate_dataset
    from pcdet.train_utils.experiment import load_experiment_cfg

    work = Path(work)
    if data_path is None:
        data_path = work / "synthetic_kitti"
        generate_dataset(data_path, 24, seed=0, workers=1, val_fraction=0.17)
        cfg = load_experiment_cfg(TEACHER)
        create_kitti_infos(cfg.DATA_CONFIG, cfg.CLASS_NAMES, data_path, workers=0)
    n_train = len((Path(data_path) / "ImageSets" / "train.txt").read_text().split())
    per_epoch = -(-n_train // 2)
    epochs = -(-steps // per_epoch)
    result = {"steps_requested": steps, "train_frames": n_train, "steps_per_epoch": per_epoch, "epochs": epochs,
              "precision": precision, "threads": 1}
    teacher_run, teacher_ckpt = _train(TEACHER, data_path, work / "runs", epochs, precision)
    student_run, student_ckpt = _train(STUDENT_KD, data_path, work / "runs", epochs, precision,
                                       ("--teacher_ckpt", str(teacher_ckpt)))
    for name, run, ckpt in (("teacher", teacher_run, teacher_ckpt), ("pointdistiller_student", student_run,
                                                                       student_ckpt)):
        trace = read_scalars(run / "tensorboard")
        result[name] = {"cfg_file": str(Path(run).relative_to(work / "runs")), "steps": len(trace),
                        "loss": [v for _, v in trace], "weights_sha256": state_checksum(ckpt)}
    return result


def compare(a, b):
    same = True
    for name in ("teacher", "pointdistiller_student"):
        la, lb = a[name]["loss"], b[name]["loss"]
        diff = max((abs(x - y) for x, y in zip(la, lb)), default=0.0)
        ok = la == lb and a[name]["weights_sha256"] == b[name]["weights_sha256"]
        same &= ok
        print(f"{name}: {len(la)} vs {len(lb)} steps, max |loss difference| {diff:.3g}, weights "
              f"{'identical' if a[name]['weights_sha256'] == b[name]['weights_sha256'] else 'DIFFERENT'} "
              f"({a[name]['weights_sha256'][:16]} / {b[name]['weights_sha256'][:16]}) -> {'identical' if ok else 'DIFFERENT'}")
    return same


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", help="write the fingerprint JSON here")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--data_path", default=None, help="a KITTI-layout dataset with infos (default: generate one)")
    p.add_argument("--precision", default="none", choices=["none", "bf16"])
    p.add_argument("--keep", default=None, help="keep the runs in this folder (default: a temporary one)")
    p.add_argument("--compare", nargs=2, metavar=("A", "B"), help="compare two fingerprint files")
    args = p.parse_args(argv)
    if args.compare:
        a, b = (json.loads(Path(x).read_text()) for x in args.compare)
        return 0 if compare(a, b) else 1
    if not args.out:
        p.error("--out is required (or --compare A B)")
    with tempfile.TemporaryDirectory() as tmp:
        res = fingerprint(args.steps, args.data_path, args.keep or tmp, args.precision)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=1) + "\n")
    for name in ("teacher", "pointdistiller_student"):
        r = res[name]
        print(f"{name}: {r['steps']} steps, loss {r['loss'][0]:.6f} -> {r['loss'][-1]:.6f}, "
              f"weights sha256 {r['weights_sha256'][:16]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
