"""Helpers shared by the tests (one module, imported as ``tests.helpers``): the real-data guard,
a stand-in dataset with only the geometry a model is built from, small configs and pillar batches."""
import math
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from easydict import EasyDict

from pcdet.config import cfg_from_yaml_file
from pcdet.utils.paths import REPO_ROOT, realdata_dir

KITTI_MODELS = REPO_ROOT / "tools" / "cfgs" / "kitti_models"


def require_realdata(sub):
    """``realdata/<sub>``; skips with a reason when absent, fails when ``CI=true``."""
    path = realdata_dir() / sub
    if not path.exists():
        msg = f"real sample data not found at {path} (set PCDET_REALDATA to the realdata folder)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(msg + "; CI=true requires it")
        pytest.skip(msg)
    return path


def fake_dataset(cfg, training=True, voxel=(0.16, 0.16, 4.0)):
    """What a model reads of its dataset when it is built: class names, grid, range, voxel size,
    point features (the implicit duck type of DatasetTemplate)."""
    pc_range = np.array(cfg.DATA_CONFIG.POINT_CLOUD_RANGE, dtype=np.float32)
    vs = np.array(voxel, dtype=np.float32)
    grid = np.round((pc_range[3:] - pc_range[:3]) / vs).astype(np.int64)
    proc = EasyDict(grid_size=grid, point_cloud_range=pc_range, voxel_size=vs, keys_with_suffix={})
    return EasyDict(class_names=cfg.CLASS_NAMES, data_processor=proc, training=training,
                    point_feature_encoder=EasyDict(num_point_features=4))


def small_cfg(name="pointpillar.yaml"):
    """A KITTI model config with a small BEV range (the model code is the same, the test is fast)."""
    cfg = cfg_from_yaml_file(KITTI_MODELS / name)
    cfg.DATA_CONFIG.POINT_CLOUD_RANGE = [0, -10.24, -3, 20.48, 10.24, 1]
    return cfg


def pillar_batch(grid, batch_size=2, num_voxels=400, seed=0):
    """Random pillars over ``grid`` (samples drawn at random) with fixed ground-truth boxes."""
    g = torch.Generator().manual_seed(seed)
    coords = torch.stack(
        [torch.randint(0, batch_size, (num_voxels,), generator=g), torch.zeros(num_voxels, dtype=torch.long),
         torch.randint(0, int(grid[1]), (num_voxels,), generator=g), torch.randint(0, int(grid[0]), (num_voxels,), generator=g)],
        dim=1,
    )
    gt = torch.tensor(
        [[[8.0, 1.0, -1.0, 3.9, 1.6, 1.56, 0.3, 1], [12.0, -3.0, -0.9, 0.8, 0.6, 1.73, 0.0, 2]],
         [[15.0, 2.0, -0.9, 1.76, 0.6, 1.73, 1.2, 3], [0, 0, 0, 0, 0, 0, 0, 0]]]
    )
    return {"voxels": torch.randn(num_voxels, 32, 4, generator=g),
            "voxel_num_points": torch.randint(1, 32, (num_voxels,), generator=g),
            "voxel_coords": coords, "batch_size": batch_size, "gt_boxes": gt[:batch_size]}


def random_batch(grid, batch_size=2, per_sample=(150, 90), seed=0):
    """Distinct random pillars per sample (``per_sample`` of them) with fixed boxes, the KD tests' batch."""
    g = torch.Generator().manual_seed(seed)
    coords = []
    for b, n in zip(range(batch_size), per_sample):
        cells = torch.randperm(int(grid[0]) * int(grid[1]), generator=g)[:n]
        coords.append(torch.stack([torch.full((n,), b), torch.zeros(n, dtype=torch.long),
                                   cells // int(grid[0]), cells % int(grid[0])], 1))
    coords = torch.cat(coords)
    v = coords.shape[0]
    # box edges off the cell grid, so that "cell centre inside a box" has no ties
    gt = torch.tensor([[[4.0, 1.0, -1.0, 3.9, 1.6, 1.56, 0.3, 1], [6.03, -2.01, -0.9, 0.8, 0.6, 1.73, 0.0, 2]],
                       [[7.0, 2.0, -0.9, 1.76, 0.6, 1.73, 1.2, 3], [0, 0, 0, 0, 0, 0, 0, 0]]])
    return {"voxels": torch.randn(v, 32, 4, generator=g), "voxel_num_points": torch.randint(1, 33, (v,), generator=g),
            "voxel_coords": coords, "batch_size": batch_size, "gt_boxes": gt[:batch_size],
            "frame_id": [f"{seed:03d}{b:03d}" for b in range(batch_size)]}


def voxel_batch(grid, per_sample=(700, 500), seed=0):
    """Distinct random voxels of a (x, y, z) ``grid`` per sample, 5 points each, with a Car and a
    Pedestrian box inside the small range."""
    g = torch.Generator().manual_seed(seed)
    coords = []
    for b, n in enumerate(per_sample):
        cells = torch.randperm(int(np.prod(grid)), generator=g)[:n]
        x, y, z = cells % grid[0], (cells // grid[0]) % grid[1], cells // (grid[0] * grid[1])
        coords.append(torch.stack([torch.full((n,), b), z, y, x], 1))
    coords = torch.cat(coords).int()
    v = coords.shape[0]
    gt = torch.tensor([[[3.0, 0.5, -1.0, 3.9, 1.6, 1.56, 0.3, 1], [5.0, -1.5, -0.9, 0.8, 0.6, 1.73, 0.0, 2]],
                       [[4.0, 1.0, -0.9, 1.76, 0.6, 1.73, 1.2, 3], [0, 0, 0, 0, 0, 0, 0, 0]]])
    return {"voxels": torch.randn(v, 5, 4, generator=g), "voxel_num_points": torch.randint(1, 6, (v,), generator=g),
            "voxel_coords": coords, "batch_size": 2, "gt_boxes": gt,
            "frame_id": [f"{seed:03d}{b:03d}" for b in range(2)]}


# ----------------------------------------------------------------------------- segmentation KD
SEG_GRID = (24, 18, 8)  # a small cylindrical grid over rho 0..50 m, phi -pi..pi, z -4..2 m
SEG_VOLUME = ((0.0, -np.pi, -4.0), (50.0, np.pi, 2.0))


class SegGeometry:
    """What a segmentor reads of its dataset when it is built (SemanticKITTI-like: label 0 ignored)."""
    IGNORE_LABEL = 0

    def __init__(self, class_names, grid=SEG_GRID):
        self.class_names = list(class_names)
        self.point_feature_encoder = EasyDict(num_point_features=4)
        self.data_processor = EasyDict(grid_size=np.array(grid), point_cloud_range=np.array([-50, -50, -4, 50, 50, 2.0]),
                                       voxel_size=None, keys_with_suffix={})
        self.training = True


def seg_batch(seed, n=(900, 700), grid=SEG_GRID, num_labels=20):
    """A collated segmentation batch of random front points (the cylindrical partition's keys, labels)."""
    from pcdet.datasets.processor.cylindrical import cylindrical_partition

    rng = np.random.default_rng(seed)
    pts, ind, feats, labels = [], [], [], []
    for b, m in enumerate(n):
        rho, phi = rng.uniform(2, 45, m), rng.uniform(-0.8, 0.8, m)
        p = np.stack([rho * np.cos(phi), rho * np.sin(phi), rng.uniform(-3, 1, m), rng.uniform(0, 1, m)], 1)
        p = p.astype(np.float32)
        g, f = cylindrical_partition(p, grid, *SEG_VOLUME)
        pts.append(np.concatenate([np.full((m, 1), b, np.float32), p], axis=1))
        ind.append(g), feats.append(f), labels.append(rng.integers(0, num_labels, m))
    return {"points": torch.from_numpy(np.concatenate(pts)), "point_grid_ind": torch.from_numpy(np.concatenate(ind)),
            "point_cyl_features": torch.from_numpy(np.concatenate(feats)),
            "point_labels": torch.from_numpy(np.concatenate(labels)).long(), "batch_size": len(n)}


def seg_kd_wrapper(tmp_path, kd_cfg_file, method=None, grid=SEG_GRID):
    """The DistillationWrapper of a segmentation KD config on :class:`SegGeometry`, in training mode, with
    a randomly initialised teacher saved as its checkpoint; ``method`` overrides keys of KD.METHODS[0]."""
    from pcdet.models import build_network
    from pcdet.train_utils.experiment import load_experiment_cfg

    cfg = load_experiment_cfg(kd_cfg_file)
    cfg.KD.METHODS[0].update(method or {})
    ds = SegGeometry(cfg.CLASS_NAMES, grid)
    torch.manual_seed(1)
    teacher = build_network(cfg.KD.TEACHER.MODEL, len(cfg.CLASS_NAMES), ds)
    torch.save({"model_state": teacher.state_dict()}, tmp_path / "t.pth")
    cfg.KD.TEACHER.CKPT = str(tmp_path / "t.pth")
    torch.manual_seed(0)
    model = build_network(cfg.MODEL, len(cfg.CLASS_NAMES), ds, kd_cfg=cfg.KD)
    model.train()
    return model


# ----------------------------------------------------------------------------- dense references of spconv layers
# Independent dense transcriptions of spconv 2's layers, for tests that compare a sparse network with
# F.conv3d on the same weights: a submanifold convolution is a 'same' convolution kept at the active
# sites only; a strided sparse convolution is the dense strided convolution, active wherever its
# window holds an active input site.
def scatter_dense(coords, feats, batch_size, spatial_shape):
    """(B, C, *spatial_shape) zeros with ``feats`` (N, C) at ``coords`` (N, 4) [b, d0, d1, d2]."""
    c = coords.long()
    out = torch.zeros(batch_size, feats.shape[1], *spatial_shape, dtype=feats.dtype)
    out[c[:, 0], :, c[:, 1], c[:, 2], c[:, 3]] = feats
    return out


def gather_dense(dense, coords):
    c = coords.long()
    return dense[c[:, 0], :, c[:, 1], c[:, 2], c[:, 3]]


def conv3d_weight(conv):
    """spconv 2 weights (out, k0, k1, k2, in) as F.conv3d's (out, in, k0, k1, k2)."""
    return conv.weight.permute(0, 4, 1, 2, 3)


def dense_subm(conv, x, mask):
    return F.conv3d(x, conv3d_weight(conv), padding=tuple(k // 2 for k in conv.kernel_size)) * mask


def dense_sparse_conv(conv, x, mask):
    """(output, output mask) of a strided ``SparseConv3d`` on dense ``x`` with active ``mask`` (B, 1, ...)."""
    kw = dict(stride=tuple(conv.stride), padding=tuple(conv.padding))
    y = F.conv3d(x, conv3d_weight(conv), **kw)
    out_mask = (F.conv3d(mask, torch.ones(1, 1, *conv.kernel_size, dtype=mask.dtype), **kw) > 0).to(mask.dtype)
    return y * out_mask, out_mask


def dense_bn(bn, x, mask):
    """Eval-mode BatchNorm1d of the sparse rows, on the active sites of dense ``x``."""
    shape = (1, -1, 1, 1, 1)
    y = (x - bn.running_mean.view(shape)) / torch.sqrt(bn.running_var.view(shape) + bn.eps)
    return (y * bn.weight.view(shape) + bn.bias.view(shape)) * mask


def randomise_bn1d(module, gen, types=(torch.nn.BatchNorm1d,)):
    """Running statistics and affine parameters of every BatchNorm of ``types`` (default BatchNorm1d)
    drawn from ``gen`` (so that an eval-mode reference is not the identity)."""
    for m in module.modules():
        if isinstance(m, types):
            with torch.no_grad():
                m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=gen) * 0.1)


# ----------------------------------------------------------------------------- KD config families
def load_synthetic_and_kitti_twin(path, cwd, monkeypatch):
    """(embedded-dataset KD config loaded from another directory by a relative path, its kd_cfgs/kitti twin),
    after the checks every embedded KD experiment passes: the embedded data, the teacher on the same voxels."""
    from pcdet.train_utils.experiment import load_experiment_cfg

    monkeypatch.chdir(cwd)
    cfg = load_experiment_cfg(os.path.relpath(path, cwd))
    kitti = load_experiment_cfg(REPO_ROOT / "kd_cfgs" / "kitti" / path.name)
    assert cfg.DATA_CONFIG.DATA_PATH == "data/synthetic_kitti" and cfg.KD.TEACHER.DATA_CONFIG == cfg.DATA_CONFIG
    return cfg, kitti


# ----------------------------------------------------------------------------- boxes
def random_boxes(n, seed, spread=10.0):
    g = torch.Generator().manual_seed(seed)
    centre = torch.rand(n, 3, generator=g) * torch.tensor([spread, spread, 2.0])
    size = torch.rand(n, 3, generator=g) * 3 + 0.3
    heading = (torch.rand(n, 1, generator=g) - 0.5) * 2 * math.pi
    return torch.cat([centre, size, heading], 1).double()


# ----------------------------------------------------------------------------- host transfers
def host_copy_numel(args, kwargs, out, device_type):
    """Elements of the largest host (CPU) tensor in ``out`` when some tensor of ``args`` / ``kwargs`` is
    on ``device_type``: what one operation copied from that device to the host (0: no such copy)."""
    from torch.utils import _pytree as pytree

    if not any(isinstance(a, torch.Tensor) and a.device.type == device_type for a in pytree.tree_leaves((args, kwargs))):
        return 0
    return max((o.numel() for o in pytree.tree_leaves(out) if isinstance(o, torch.Tensor) and o.device.type == "cpu"),
               default=0)


def host_copies(device_type="cuda", min_numel=256):
    """A dispatch mode recording (operation, elements) of every copy of at least ``min_numel`` elements
    from ``device_type`` to the host made inside it (``.cpu()``, ``.to('cpu')``, ``copy_`` into a host
    tensor; scalars read by ``.item()`` are not tensors and are not counted): ``with host_copies() as h:
    ...; h.copies``. Autograd's backward runs on other threads and is not seen."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class HostCopies(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.copies = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            n = host_copy_numel(args, kwargs, out, device_type)
            if n >= min_numel:
                self.copies.append((str(func), n))
            return out

    return HostCopies()
