"""Cylinder3D's point feature encoder: a per-point MLP, per-voxel max pooling, feature compression.

Follows xinge008/Cylinder3D ``network/cylinder_fea_generator.py`` (class ``cylinder_fea``):
``PPmodel`` = BN(9) - Linear(9, h1) - BN - ReLU - Linear(h1, h2) - BN - ReLU - Linear(h2, h3) - BN - ReLU -
Linear(h3, out) (the last layer without activation; widths ``POINT_MLP`` = [h1, h2, h3, out], the
original 64, 128, 256, 256), then the maximum of the point features of every occupied cell (the
original's ``torch_scatter.scatter_max`` over unique (batch, rho, phi, z) cells; here
``Tensor.scatter_reduce(..., "amax")``, the same values) and ``fea_compression`` = Linear(out,
``COMPRESSED_CHANNELS``) + ReLU (the original 16). The original shuffles the points before the
unique; a maximum does not depend on the order, so this one does not.

Reads ``point_cyl_features`` (N, 9) and ``point_grid_ind`` (N, 3) of the cylindrical partition
(:mod:`pcdet.datasets.processor.cylindrical`) and ``points`` (N, 1 + C) for the batch index. Writes
``voxel_features`` (V, COMPRESSED_CHANNELS), ``voxel_coords`` (V, 4) int32 ``[batch, rho, phi, z]``
(sorted, unique), ``point_to_voxel`` (N,) int64 (the voxel row of every point) and
``point_features`` (N, out) (the PPmodel output, which the point refinement and point-level
distillation read).
"""
import torch
import torch.nn as nn

from pcdet.config import check_keys
from pcdet.models.model_template import FeatureSpec
from pcdet.models.registries import VFES

NUM_CYL_FEATURES = 9


def unique_cells(batch_idx, grid_ind):
    """``(coords (V, 4) [batch, i0, i1, i2] sorted lexicographically, inverse (N,))`` of the occupied cells:
    ``torch.unique(cells, dim=0)`` computed on one int64 key per point (a 1-D sort; unique over rows is
    several times slower on the CPU), same result."""
    dims = (grid_ind.max(dim=0).values + 1).tolist() if grid_ind.shape[0] else [1, 1, 1]
    key = ((batch_idx * dims[0] + grid_ind[:, 0]) * dims[1] + grid_ind[:, 1]) * dims[2] + grid_ind[:, 2]
    uniq, inverse = torch.unique(key, sorted=True, return_inverse=True)
    z = uniq % dims[2]
    rest = uniq // dims[2]
    y = rest % dims[1]
    rest = rest // dims[1]
    x = rest % dims[0]
    return torch.stack([rest // dims[0], x, y, z], dim=1), inverse


@VFES.register("CylinderPointVFE")
class CylinderPointVFE(nn.Module):
    ALLOWED_KEYS = {"NAME", "POINT_MLP", "COMPRESSED_CHANNELS"}

    def __init__(self, model_cfg, num_point_features=None, grid_size=None, **kwargs):
        super().__init__()
        check_keys(model_cfg, self.ALLOWED_KEYS, "MODEL.VFE (CylinderPointVFE)")
        widths = [int(w) for w in model_cfg.get("POINT_MLP", [64, 128, 256, 256])]
        if len(widths) < 2:
            raise ValueError("MODEL.VFE.POINT_MLP needs at least two widths (hidden ..., output)")
        layers = [nn.BatchNorm1d(NUM_CYL_FEATURES)]
        c_in = NUM_CYL_FEATURES
        for w in widths[:-1]:
            layers += [nn.Linear(c_in, w), nn.BatchNorm1d(w), nn.ReLU()]
            c_in = w
        layers.append(nn.Linear(c_in, widths[-1]))
        self.point_mlp = nn.Sequential(*layers)
        self.point_channels = widths[-1]
        comp = model_cfg.get("COMPRESSED_CHANNELS", 16)
        self.out_channels = int(comp) if comp else self.point_channels
        self.compression = (nn.Sequential(nn.Linear(self.point_channels, self.out_channels), nn.ReLU())
                            if comp else nn.Identity())
        self.grid_size = None if grid_size is None else [int(g) for g in grid_size]

    def get_output_feature_dim(self):
        return self.out_channels

    def feature_specs(self, info):
        return {"point_features": FeatureSpec(self.point_channels, "points", coord_key="points"),
                "voxel_features": FeatureSpec(self.out_channels, "sparse_rows", coord_key="voxel_coords")}

    def forward(self, batch_dict):
        feats = batch_dict["point_cyl_features"]
        grid_ind = batch_dict["point_grid_ind"].long()
        batch_idx = batch_dict["points"][:, 0].long()
        coords, inverse = unique_cells(batch_idx, grid_ind)
        point_feats = self.point_mlp(feats)
        pooled = point_feats.new_zeros((coords.shape[0], point_feats.shape[1]))
        pooled = pooled.scatter_reduce(0, inverse[:, None].expand_as(point_feats), point_feats, reduce="amax",
                                       include_self=False)
        batch_dict["voxel_features"] = self.compression(pooled)
        batch_dict["voxel_coords"] = coords.int()
        batch_dict["point_to_voxel"] = inverse
        batch_dict["point_features"] = point_feats
        return batch_dict
