"""Helpers shared by the tests (one module, imported as ``tests.helpers``): the real-data guard,
a stand-in dataset with only the geometry a model is built from, small configs and pillar batches."""
import os

import numpy as np
import pytest
import torch
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
