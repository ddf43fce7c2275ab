"""SECOND KD at the KITTI settings on the real sample frames (read-only; infos kept elsewhere):
``kd_cfgs/kitti/second_4x_pointdistiller.yaml`` trains a few steps through the training data pipeline
(augmentation included) with two torch threads; the gradient reaches the student's sparse encoder,
BEV backbone and head and both graph adapters of both BEV levels, never the teacher, whose weights
and BatchNorm statistics stay as loaded."""
import torch

from pcdet.datasets import build_dataloader
from pcdet.datasets.kitti.kitti_dataset import create_kitti_infos
from pcdet.datasets.point_cloud_files import PointCloudFileDataset
from pcdet.models import build_network, load_data_to_device
from pcdet.train_utils.experiment import apply_data_overrides, load_experiment_cfg
from pcdet.train_utils.optimization import build_optimizer
from pcdet.utils.paths import REPO_ROOT

KD_CFG = REPO_ROOT / "kd_cfgs" / "kitti" / "second_4x_pointdistiller.yaml"


def test_second_pointdistiller_trains_on_real_kitti_frames(real_kitti, tmp_path, two_threads):
    cfg = load_experiment_cfg(KD_CFG)
    infos = tmp_path / "infos"
    create_kitti_infos(cfg.DATA_CONFIG, cfg.CLASS_NAMES, real_kitti, save_path=infos, workers=0)
    apply_data_overrides(cfg, real_kitti, infos)
    tcfg = load_experiment_cfg(REPO_ROOT / "tools" / "cfgs" / "kitti_models" / "second.yaml")
    ds = PointCloudFileDataset(tcfg.DATA_CONFIG, tcfg.CLASS_NAMES, [real_kitti / "training" / "velodyne" / "000000.bin"])
    torch.manual_seed(0)
    teacher_init = build_network(tcfg.MODEL, 3, ds)
    ckpt = tmp_path / "teacher.pth"
    torch.save({"model_state": teacher_init.state_dict()}, ckpt)
    cfg.KD.TEACHER.CKPT = str(ckpt)

    dataset, loader, _ = build_dataloader(cfg.DATA_CONFIG, cfg.CLASS_NAMES, batch_size=1, dist=False, workers=0,
                                          seed=0, training=True)
    torch.manual_seed(1)
    model = build_network(cfg.MODEL, 3, dataset, kd_cfg=cfg.KD)
    model.train()
    teacher_before = {k: v.clone() for k, v in model.teacher.state_dict().items()}
    optimizer = build_optimizer(model, cfg.OPTIMIZATION)
    s = model.student
    student_probes = {"sparse encoder": s.backbone_3d.conv_input[0].weight, "BEV backbone": s.backbone_2d.blocks[0][0].weight,
                      "head": s.dense_head.conv_cls.weight}
    steps = 0
    for batch in loader:
        batch = load_data_to_device(batch, torch.device("cpu"))
        optimizer.zero_grad()
        ret, tb, _ = model(batch)
        assert torch.isfinite(ret["loss"]), tb
        ret["loss"].backward()
        assert batch["voxel_coords"].shape[0] > 5000  # a real frame at 0.05 m voxels
        for name, p in student_probes.items():
            assert p.grad is not None and p.grad.abs().sum() > 0, name
        for level in model.kd_methods:  # both adapters of both BEV levels
            for side in (level.adapter_t, level.adapter_s):
                assert side.conv.weight.grad.abs().sum() > 0, level.feature
        assert all(p.grad is None for p in model.teacher.parameters())
        optimizer.step()
        steps += 1
        if steps == 2:
            break
    assert steps == 2
    for k, v in model.teacher.state_dict().items():
        assert torch.equal(v, teacher_before[k]), k  # weights and BN statistics untouched
    assert [m.feature for m in model.kd_methods] == ["spatial_features_1x", "spatial_features_2x"]

