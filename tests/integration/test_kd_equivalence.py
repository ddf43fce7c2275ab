"""A KD config whose method has weight 0 trains the student bit for bit like the no-KD config (same
seed, one thread): the teacher forward, the KD method's own parameters and the wrapper change nothing
in the student's data order, augmentation draws, losses or updates. This is what makes seed-paired
comparisons of KD arms against the no-KD arm meaningful (the arms differ only by the KD term)."""
import importlib.util
import os
import subprocess
import sys

import pytest
import torch

from pcdet.datasets.kitti.kitti_dataset import create_kitti_infos
from pcdet.datasets.point_cloud_files import PointCloudFileDataset
from pcdet.datasets.synthetic.build import generate_dataset
from pcdet.models import build_model
from pcdet.train_utils.experiment import load_experiment_cfg, output_dir_for
from pcdet.utils.paths import REPO_ROOT

STUDENT = REPO_ROOT / "tools" / "cfgs" / "synthetic_models" / "pointpillar_4x.yaml"
KD = REPO_ROOT / "kd_cfgs" / "synthetic" / "pointpillar_4x_pointdistiller.yaml"
TEACHER = REPO_ROOT / "tools" / "cfgs" / "synthetic_models" / "pointpillar.yaml"
ZERO_PD = ("[{NAME: PointDistiller, WEIGHT: 0.0, FEATURE: pillar_features, IMPORTANCE: num_points, N: 2000, K: 64, "
           "TAU: 0.01, KNN_SPACE: feature, LOCAL_DISTILLATION: True, REWEIGHT: True}]")


def _scalars(run):
    spec = importlib.util.spec_from_file_location("fingerprint", REPO_ROOT / "tools" / "diagnostics" /
                                                  "training_fingerprint.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return [v for _, v in mod.read_scalars(run / "tensorboard", "train/loss_task")] or \
        [v for _, v in mod.read_scalars(run / "tensorboard", "train/loss")]


@pytest.fixture(scope="module")
def data_and_teacher(tmp_path_factory):
    root = tmp_path_factory.mktemp("equiv")
    data = root / "data"
    generate_dataset(data, frames=10, seed=11, val_fraction=0.2)
    cfg = load_experiment_cfg(TEACHER)
    create_kitti_infos(cfg.DATA_CONFIG, cfg.CLASS_NAMES, data, workers=0)
    torch.manual_seed(0)
    ds = PointCloudFileDataset(cfg.DATA_CONFIG, cfg.CLASS_NAMES, [root / "none.bin"])
    teacher = root / "teacher.pth"
    torch.save({"model_state": build_model(cfg.MODEL, 3, ds).state_dict()}, teacher)
    return root, data, teacher


def _train(cfg, data, out, *extra):
    cmd = [sys.executable, str(REPO_ROOT / "tools" / "train.py"), "--cfg_file", str(cfg), "--epochs", "2",
           "--seed", "4", "--workers", "0", "--no_eval", "--no_progress", "--output_root", str(out),
           "--data_path", str(data), *extra]
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", NUMBA_NUM_THREADS="1")
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return output_dir_for(cfg, "default", out)


def test_weight_zero_kd_run_equals_the_no_kd_run_bit_for_bit(data_and_teacher):
    root, data, teacher = data_and_teacher
    plain = _train(STUDENT, data, root / "out")
    kd = _train(KD, data, root / "out", "--teacher_ckpt", str(teacher), "--set", "KD.METHODS", ZERO_PD)
    a = torch.load(plain / "ckpt" / "checkpoint_epoch_2.pth", weights_only=False)["model_state"]
    b = torch.load(kd / "ckpt" / "student_epoch_2.pth", weights_only=False)["model_state"]
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, different[:5]
    la, lb = _scalars(plain), _scalars(kd)
    assert len(la) == len(lb) == 8 and la == lb  # 8 frames, batch 2, 2 epochs; the task loss of every step
