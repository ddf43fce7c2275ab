"""PointPillars' pillar feature net (PFN).

Reads ``voxels`` (V, P, C), ``voxel_num_points`` (V,), ``voxel_coords`` (V, 4) = [b, z, y, x];
writes ``pillar_features`` (V, C_out). Each point is decorated with its offset to the pillar's
point mean (3) and to the pillar centre (3), optionally its distance to the sensor, then a
linear + BN + ReLU layer per PFN layer with a max over the pillar's points.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from pcdet.config import check_keys
from pcdet.models.model_template import FeatureSpec
from pcdet.models.registries import VFES


class PFNLayer(nn.Module):
    def __init__(self, in_channels, out_channels, use_norm=True, last_layer=False):
        super().__init__()
        self.last_vfe = last_layer
        self.use_norm = use_norm
        if not self.last_vfe:
            out_channels = out_channels // 2  # concatenated with the pillar max below
        self.linear = nn.Linear(in_channels, out_channels, bias=not use_norm)
        self.norm = nn.BatchNorm1d(out_channels, eps=1e-3, momentum=0.01) if use_norm else None

    def forward(self, inputs):
        x = self.linear(inputs)
        if self.norm is not None:
            if x.shape[0] == 0:  # BatchNorm1d refuses empty inputs in training mode
                x = x * 0.0
            else:
                x = self.norm(x.permute(0, 2, 1)).permute(0, 2, 1)
        x = F.relu(x)
        x_max = torch.max(x, dim=1, keepdim=True)[0] if x.shape[1] > 0 else x.new_zeros(x.shape[0], 1, x.shape[2])
        if self.last_vfe:
            return x_max
        return torch.cat([x, x_max.repeat(1, inputs.shape[1], 1)], dim=2)


@VFES.register()
class PillarVFE(nn.Module):
    ALLOWED_KEYS = {"NAME", "WITH_DISTANCE", "USE_ABSLOTE_XYZ", "USE_ABSOLUTE_XYZ", "USE_NORM", "NUM_FILTERS"}

    def __init__(self, model_cfg, num_point_features, voxel_size, point_cloud_range, **kwargs):
        super().__init__()
        self.model_cfg = model_cfg
        check_keys(model_cfg, self.ALLOWED_KEYS, "MODEL.VFE")
        self.use_norm = model_cfg.get("USE_NORM", True)
        self.with_distance = model_cfg.get("WITH_DISTANCE", False)
        self.use_absolute_xyz = model_cfg.get("USE_ABSOLUTE_XYZ", model_cfg.get("USE_ABSLOTE_XYZ", True))
        in_ch = num_point_features + (6 if self.use_absolute_xyz else 3) + (1 if self.with_distance else 0)
        self.num_filters = list(model_cfg.NUM_FILTERS)
        assert len(self.num_filters) > 0, "MODEL.VFE.NUM_FILTERS must list at least one width"
        filters = [in_ch] + self.num_filters
        self.pfn_layers = nn.ModuleList(
            PFNLayer(filters[i], filters[i + 1], self.use_norm, last_layer=(i >= len(filters) - 2))
            for i in range(len(filters) - 1)
        )
        self.register_buffer("voxel_size", torch.tensor(voxel_size, dtype=torch.float32), persistent=False)
        self.register_buffer("pc_range", torch.tensor(point_cloud_range, dtype=torch.float32), persistent=False)

    def get_output_feature_dim(self):
        return self.num_filters[-1]

    def feature_specs(self, info):
        return {"pillar_features": FeatureSpec(self.num_filters[-1], "sparse_rows", coord_key="voxel_coords",
                                               count_key="voxel_num_points")}

    @staticmethod
    def get_paddings_indicator(actual_num, max_num):
        """(V,) counts -> (V, max_num) bool mask of the real (non-padding) points."""
        return torch.arange(max_num, device=actual_num.device)[None, :] < actual_num[:, None]

    def forward(self, batch_dict):
        voxel_features = batch_dict["voxels"]
        voxel_num_points = batch_dict["voxel_num_points"]
        coords = batch_dict["voxel_coords"]
        num = voxel_num_points.clamp(min=1).type_as(voxel_features).view(-1, 1, 1)
        points_mean = voxel_features[:, :, :3].sum(dim=1, keepdim=True) / num
        f_cluster = voxel_features[:, :, :3] - points_mean

        vs, rng = self.voxel_size, self.pc_range
        centre = torch.stack(
            [
                coords[:, 3].to(voxel_features.dtype) * vs[0] + (vs[0] / 2 + rng[0]),
                coords[:, 2].to(voxel_features.dtype) * vs[1] + (vs[1] / 2 + rng[1]),
                coords[:, 1].to(voxel_features.dtype) * vs[2] + (vs[2] / 2 + rng[2]),
            ],
            dim=1,
        )
        f_center = voxel_features[:, :, :3] - centre[:, None, :]
        if self.use_absolute_xyz:
            features = [voxel_features, f_cluster, f_center]
        else:
            features = [voxel_features[..., 3:], f_cluster, f_center]
        if self.with_distance:
            features.append(torch.norm(voxel_features[:, :, :3], 2, 2, keepdim=True))
        features = torch.cat(features, dim=-1)
        mask = self.get_paddings_indicator(voxel_num_points, features.shape[1])
        features = features * mask.unsqueeze(-1).type_as(features)
        for pfn in self.pfn_layers:
            features = pfn(features)
        batch_dict["pillar_features"] = features.squeeze(1)
        return batch_dict
