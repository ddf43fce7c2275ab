"""SECOND: parameter counts and dense MACs of the KITTI teacher and its 4x / 16x students against the
design notes' counts (OpenPCDet widths; the paper prints 5.3 / 1.4 / 0.4 M and 69.8 / 17.8 / 4.6 G),
the height compression's shape rule, the dense conversion against spconv's own, and one training
step on a small range; the sparse encoder against a dense-convolution reference on a real KITTI frame
with two torch threads (the spconv CPU guard)."""
import numpy as np
import pytest
import torch
from easydict import EasyDict

from pcdet.datasets.point_cloud_files import PointCloudFileDataset
from pcdet.models import build_network, load_data_to_device
from pcdet.models.backbones_2d.map_to_bev.height_compression import HeightCompression, _encoded_depth
from pcdet.train_utils.experiment import load_experiment_cfg
from pcdet.utils.paths import REPO_ROOT
from pcdet.utils.spconv_utils import spconv, to_dense
from tests.helpers import (dense_bn, dense_sparse_conv, dense_subm, fake_dataset, gather_dense, randomise_bn1d,
                           scatter_dense)

KITTI = REPO_ROOT / "tools" / "cfgs" / "kitti_models"


@pytest.mark.parametrize("name,params_m", [("second", 5.326), ("second_4x", 1.343), ("second_16x", 0.341)])
def test_kitti_parameter_counts(name, params_m):
    cfg = load_experiment_cfg(KITTI / f"{name}.yaml")
    model = build_network(cfg.MODEL, 3, fake_dataset(cfg, voxel=(0.05, 0.05, 0.1)))
    assert abs(sum(p.numel() for p in model.parameters()) / 1e6 - params_m) < 0.0005


@pytest.mark.parametrize("name,dense_g", [("second", 69.64), ("second_4x", 17.73), ("second_16x", 4.60)])
def test_dense_macs_do_not_depend_on_the_frame(real_kitti, tmp_path, name, dense_g):
    """Dense MACs (what the paper's counter counts) are those of the full BEV grid whatever the frame, so
    2000 points of a real KITTI frame give them; the sparse ones (frame-dependent) are counted apart."""
    from benchmark.complexity import measure

    pts = np.fromfile(real_kitti / "training" / "velodyne" / "000000.bin", dtype=np.float32).reshape(-1, 4)
    frame = tmp_path / "000000.bin"
    pts[::60][:2000].tofile(frame)
    res = measure(KITTI / f"{name}.yaml", frame)
    assert abs(res["gmacs_dense"] - dense_g) < 0.005 * dense_g
    assert res["gmacs_sparse"] > 0 and res["gmacs"] == pytest.approx(res["gmacs_dense"] + res["gmacs_sparse"])


def test_height_compression_depth_and_width_rule():
    assert _encoded_depth(41) == 2  # KITTI: 40 z cells + 1 -> 21 -> 11 -> 5 -> 2
    HeightCompression(EasyDict(NAME="HeightCompression", NUM_BEV_FEATURES=256), [1408, 1600, 40], 128)
    with pytest.raises(ValueError, match="128 channels x 2 height cells"):
        HeightCompression(EasyDict(NAME="HeightCompression", NUM_BEV_FEATURES=128), [1408, 1600, 40], 128)


def test_to_dense_equals_spconv_dense():
    gen = torch.Generator().manual_seed(0)
    idx = torch.stack([torch.randint(0, 2, (300,), generator=gen), torch.randint(0, 5, (300,), generator=gen),
                       torch.randint(0, 7, (300,), generator=gen), torch.randint(0, 9, (300,), generator=gen)], 1)
    idx = torch.unique(idx, dim=0).int()
    x = spconv.SparseConvTensor(torch.randn(len(idx), 3, generator=gen), idx, [5, 7, 9], 2)
    with pytest.warns(UserWarning):  # spconv's own dense() indexes with a list (torch deprecates it)
        ref = x.dense()
    assert torch.equal(to_dense(x), ref)


def test_training_step_on_a_small_range():
    cfg = load_experiment_cfg(KITTI / "second_16x.yaml")
    cfg.DATA_CONFIG.POINT_CLOUD_RANGE = [0, -6.4, -3, 12.8, 6.4, 1]
    ds = fake_dataset(cfg, voxel=(0.05, 0.05, 0.1))
    torch.manual_seed(0)
    model = build_network(cfg.MODEL, 3, ds)
    model.train()
    rng = np.random.default_rng(0)
    grid = ds.data_processor.grid_size  # x, y, z cells
    cells = rng.choice(int(np.prod(grid)), 1500, replace=False)
    x, y, z = cells % grid[0], (cells // grid[0]) % grid[1], cells // (grid[0] * grid[1])
    b = np.repeat([0, 1], 750)
    voxels = rng.uniform(0, 1, (1500, 5, 4)).astype(np.float32)
    batch = {"voxels": torch.from_numpy(voxels), "voxel_num_points": torch.from_numpy(rng.integers(1, 6, 1500)),
             "voxel_coords": torch.from_numpy(np.stack([b, z, y, x], 1).astype(np.int32)), "batch_size": 2,
             "gt_boxes": torch.tensor([[[5.0, 0.0, -1.0, 3.9, 1.6, 1.56, 0.3, 1.0]],
                                       [[8.0, 2.0, -1.0, 0.8, 0.6, 1.73, 0.0, 2.0]]])}
    ret, tb, _ = model(batch)
    ret["loss"].backward()
    assert torch.isfinite(ret["loss"]) and batch["spatial_features"].shape == (2, 64, 256 // 8, 256 // 8)
    assert model.backbone_3d.conv_input[0].weight.grad.abs().sum() > 0


def _dense_stage(stage, x, mask):
    """Dense transcription of one VoxelBackBone8x stage (a conv / BN / ReLU block or a sequence of them)."""
    blocks = [stage] if isinstance(stage[0], (spconv.SubMConv3d, spconv.SparseConv3d)) else list(stage)
    for blk in blocks:
        conv, bn = blk[0], blk[1]
        if isinstance(conv, spconv.SubMConv3d):
            x = dense_subm(conv, x, mask)
        else:
            x, mask = dense_sparse_conv(conv, x, mask)
        x = torch.relu(dense_bn(bn, x, mask))
    return x, mask


def test_voxel_backbone_equals_a_dense_reference_on_a_real_frame(real_kitti, two_threads):
    """VoxelBackBone8x (teacher widths) on the voxels of real frame 000000 in a 6.4 x 6.4 m window
    (2,760 voxels, camera-FOV crop, MeanVFE), in float64 with two torch threads: every stage's active
    sites and features, and the input gradient, equal an independent dense transcription (F.conv3d)."""
    window = "[6.4, -3.2, -3, 12.8, 3.2, 1]"
    cfg = load_experiment_cfg(KITTI / "second.yaml", ["DATA_CONFIG.POINT_CLOUD_RANGE", window])
    frame = real_kitti / "training" / "velodyne" / "000000.bin"
    ds = PointCloudFileDataset(cfg.DATA_CONFIG, cfg.CLASS_NAMES, [frame])
    sample = ds.prepare_data({"points": ds.load_points(frame), "frame_id": frame.stem})
    batch = load_data_to_device(ds.collate_batch([sample]), torch.device("cpu"))
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = build_network(cfg.MODEL, 3, ds)
    gen = torch.Generator().manual_seed(0)
    net = model.backbone_3d
    randomise_bn1d(net, gen)
    net.double().eval()
    feats = model.vfe(dict(batch))["voxel_features"].detach().double().requires_grad_(True)
    coords = batch["voxel_coords"].int()
    assert len(coords) > 2000 and torch.get_num_threads() == 2
    out = net({"voxel_features": feats, "voxel_coords": coords, "batch_size": 1})

    feats_d = feats.detach().clone().requires_grad_(True)
    shape = net.sparse_shape
    x = scatter_dense(coords, feats_d, 1, shape)
    mask = scatter_dense(coords, torch.ones(len(coords), 1, dtype=torch.float64), 1, shape)
    stages = {}
    for name in ("conv_input", "conv1", "conv2", "conv3", "conv4", "conv_out"):
        x, mask = _dense_stage(getattr(net, name), x, mask)
        stages[name] = (x, mask)
    sparse = dict(out["multi_scale_3d_features"], conv_out=out["encoded_spconv_tensor"])
    for key, name in (("x_conv1", "conv1"), ("x_conv2", "conv2"), ("x_conv3", "conv3"), ("x_conv4", "conv4"),
                      ("conv_out", "conv_out")):
        t, (ref, ref_mask) = sparse[key], stages[name]
        assert list(t.spatial_shape) == list(ref.shape[2:]), key
        active = torch.nonzero(ref_mask[:, 0]).int()
        assert len(active) == len(t.indices) and torch.equal(
            torch.unique(t.indices, dim=0), torch.unique(active, dim=0)), key
        expected = gather_dense(ref, t.indices)
        assert (t.features - expected).abs().max().item() <= 1e-9 * expected.abs().max().item(), key
    enc, ref = sparse["conv_out"], gather_dense(stages["conv_out"][0], sparse["conv_out"].indices)
    probe = torch.randn(ref.shape, generator=gen, dtype=torch.float64)
    (enc.features * probe).sum().backward()
    (ref * probe).sum().backward()
    assert feats_d.grad.abs().max() > 0
    assert (feats.grad - feats_d.grad).abs().max().item() <= 1e-9 * feats_d.grad.abs().max().item()
