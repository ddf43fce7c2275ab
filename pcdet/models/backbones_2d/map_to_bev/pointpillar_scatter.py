"""Scatter pillar features onto the bird's-eye-view grid.

Reads ``pillar_features`` (V, C) and ``voxel_coords`` (V, 4) = [b, z, y, x]; writes
``spatial_features`` (B, C, ny, nx) with zeros where no pillar exists.
"""
import torch.nn as nn

from pcdet.config import check_keys
from pcdet.models.model_template import FeatureSpec
from pcdet.models.registries import MAP_TO_BEV


@MAP_TO_BEV.register()
class PointPillarScatter(nn.Module):
    ALLOWED_KEYS = {"NAME", "NUM_BEV_FEATURES"}

    def __init__(self, model_cfg, grid_size, num_point_features=None, **kwargs):
        super().__init__()
        check_keys(model_cfg, self.ALLOWED_KEYS, "MODEL.MAP_TO_BEV")
        self.model_cfg = model_cfg
        # The BEV width equals the VFE output width; a config may state it but must agree.
        stated = model_cfg.get("NUM_BEV_FEATURES", None)
        if stated is not None and num_point_features is not None and stated != num_point_features:
            raise ValueError(f"MODEL.MAP_TO_BEV.NUM_BEV_FEATURES={stated} but the VFE outputs {num_point_features}")
        self.num_bev_features = num_point_features if num_point_features is not None else stated
        self.nx, self.ny, self.nz = (int(v) for v in grid_size)
        assert self.nz == 1, "PointPillarScatter needs a single voxel along z (pillars)"

    bev_stride = 1  # one BEV cell per pillar

    def feature_specs(self, info):
        return {"spatial_features": FeatureSpec(self.num_bev_features * self.nz, "dense_bev", stride=1)}

    def forward(self, batch_dict):
        feats, coords = batch_dict["pillar_features"], batch_dict["voxel_coords"]
        batch_size = int(batch_dict["batch_size"])
        # cell-major canvas (B, cells, C): one zero fill, the scatter writes whole feature rows, and the
        # permuted view is a channels-last (B, C, ny, nx) map without a copy
        canvas = feats.new_zeros(batch_size, self.nz * self.ny * self.nx, self.num_bev_features)
        if feats.shape[0] > 0:
            b = coords[:, 0].long()
            flat = coords[:, 1].long() * (self.ny * self.nx) + coords[:, 2].long() * self.nx + coords[:, 3].long()
            canvas[b, flat] = feats
        canvas = canvas.permute(0, 2, 1)
        batch_dict["spatial_features"] = canvas.reshape(batch_size, self.num_bev_features * self.nz, self.ny, self.nx)
        return batch_dict
