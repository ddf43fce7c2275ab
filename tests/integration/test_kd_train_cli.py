"""``python tools/train.py --cfg_file kd_cfgs/kitti/pointpillar_4x_pointdistiller.yaml --teacher_ckpt T``
at the KITTI settings, on the real sample frames (read-only; infos kept elsewhere), from the
repository root with a relative config path and from another directory with an absolute one."""
import os
import subprocess
import sys

import pytest
import torch

from pcdet.datasets.kitti.kitti_dataset import create_kitti_infos
from pcdet.models import build_network
from pcdet.train_utils.experiment import load_experiment_cfg
from pcdet.utils.paths import REPO_ROOT

KD_REL = os.path.join("kd_cfgs", "kitti", "pointpillar_4x_pointdistiller.yaml")


@pytest.fixture(scope="module")
def kitti_kd_setup(tmp_path_factory):
    from tests.helpers import require_realdata as _require

    real = _require("kitti")
    tmp = tmp_path_factory.mktemp("kdcli")
    cfg = load_experiment_cfg(REPO_ROOT / KD_REL)
    infos = tmp / "infos"
    create_kitti_infos(cfg.DATA_CONFIG, cfg.CLASS_NAMES, real, save_path=infos, workers=0)
    # any checkpoint of the teacher config will do: an initialised teacher
    tcfg = load_experiment_cfg(REPO_ROOT / "tools" / "cfgs" / "kitti_models" / "pointpillar.yaml")
    from pcdet.datasets.point_cloud_files import PointCloudFileDataset

    ds = PointCloudFileDataset(tcfg.DATA_CONFIG, tcfg.CLASS_NAMES, [real / "training" / "velodyne" / "000000.bin"])
    torch.manual_seed(0)
    teacher = build_network(tcfg.MODEL, len(tcfg.CLASS_NAMES), ds)
    ckpt = tmp / "teacher.pth"
    torch.save({"model_state": teacher.state_dict(), "epoch": 0}, ckpt)
    return real, infos, ckpt, tmp


def _kd_train(setup, out, cwd, cfg_arg):
    """One KD epoch (no evaluation) of the KITTI PointDistiller config; returns its checkpoint folder."""
    real, infos, ckpt, _ = setup
    cmd = [sys.executable, str(REPO_ROOT / "tools" / "train.py"), "--cfg_file", cfg_arg, "--teacher_ckpt", str(ckpt),
           "--data_path", str(real), "--infos_dir", str(infos), "--epochs", "1", "--batch_size", "3",
           "--workers", "0", "--no_eval", "--no_progress", "--output_root", str(out)]
    env = dict(os.environ, OMP_NUM_THREADS="2")
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out / "kd_cfgs" / "kitti" / "pointpillar_4x_pointdistiller" / "default" / "ckpt"


@pytest.fixture(scope="module")
def repo_root_run(kitti_kd_setup):
    """The KD training started from the repository root with the relative config path (shared by the
    CLI test and the ``tools/test.py`` test: one training for both)."""
    out = kitti_kd_setup[3] / "out_repo_root"
    return out, _kd_train(kitti_kd_setup, out, REPO_ROOT, KD_REL)


@pytest.mark.parametrize("where", ["repo_root", "elsewhere"])
def test_kd_train_cli_from_any_directory(kitti_kd_setup, where, request):
    if where == "repo_root":
        run = request.getfixturevalue("repo_root_run")[1]
    else:  # another working directory, the config by its absolute path
        tmp = kitti_kd_setup[3]
        run = _kd_train(kitti_kd_setup, tmp / "out_elsewhere", tmp, str(REPO_ROOT / KD_REL))
    full = torch.load(run / "checkpoint_epoch_1.pth", weights_only=False)["model_state"]
    student = torch.load(run / "student_epoch_1.pth", weights_only=False)["model_state"]
    assert any("adapter" in k or "kd_methods" in k for k in full)  # adapters are trained and saved
    assert not any("adapter" in k or "kd_methods" in k or "teacher" in k for k in student)


def _test_py(args, cwd):
    cmd = [sys.executable, str(REPO_ROOT / "tools" / "test.py"), "--workers", "0", "--no_progress", *args]
    proc = subprocess.run(cmd, cwd=cwd, env=dict(os.environ, OMP_NUM_THREADS="2"), capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def test_test_py_evaluates_the_student_of_a_kd_run(kitti_kd_setup, repo_root_run):
    """``tools/test.py`` on a KD run: the KD config with its training checkpoint (``--ckpt``) and
    with ``--eval_all --ckpt_dir``, and the student config with the exported student checkpoint,
    all evaluate the same student to the same metrics."""
    real, infos, ckpt, tmp = kitti_kd_setup
    out, run_ckpt = repo_root_run
    data = ["--data_path", str(real), "--infos_dir", str(infos), "--batch_size", "3", "--output_root", str(out)]

    log = _test_py(["--cfg_file", KD_REL, "--ckpt", str(run_ckpt / "checkpoint_epoch_1.pth"),
                    "--extra_tag", "kd_ckpt", *data], REPO_ROOT)
    assert "evaluating its student" in log and "the student of the KD checkpoint" in log
    _test_py(["--cfg_file", KD_REL, "--eval_all", "--ckpt_dir", str(run_ckpt), "--extra_tag", "kd_all", *data],
             REPO_ROOT)
    student_cfg = str(REPO_ROOT / "tools" / "cfgs" / "kitti_models" / "pointpillar_4x.yaml")
    _test_py(["--cfg_file", student_cfg, "--ckpt", str(run_ckpt / "student_epoch_1.pth"), "--extra_tag", "exported",
              *data], tmp)

    def metrics(cfg_name, tag):
        import json

        path = out / cfg_name / tag / "eval" / "epoch_1" / "val" / "metrics.json"
        return json.loads(path.read_text())

    kd_name = os.path.join("kd_cfgs", "kitti", "pointpillar_4x_pointdistiller")
    a, b = metrics(kd_name, "kd_ckpt"), metrics(kd_name, "kd_all")
    c = metrics(os.path.join("kitti_models", "pointpillar_4x"), "exported")
    assert a["num_frames"] == 6 and a["metrics"] == b["metrics"] == c["metrics"]
    assert a["num_detections"] == b["num_detections"] == c["num_detections"]
