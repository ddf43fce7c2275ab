"""MeanVFE: the mean of the points of each voxel (SECOND's voxel feature encoder, OpenPCDet ``mean_vfe.py``).

Reads ``voxels`` (V, P, C) (zero-padded to P points), ``voxel_num_points`` (V,); writes
``voxel_features`` (V, C) = the sum of the voxel's points over their count (a voxel always holds at
least one point; the count is clamped at 1 as OpenPCDet does). No parameters.
"""
import torch
import torch.nn as nn

from pcdet.config import check_keys
from pcdet.models.model_template import FeatureSpec
from pcdet.models.registries import VFES


@VFES.register()
class MeanVFE(nn.Module):
    ALLOWED_KEYS = {"NAME"}

    def __init__(self, model_cfg, num_point_features, **kwargs):
        super().__init__()
        check_keys(model_cfg, self.ALLOWED_KEYS, "MODEL.VFE (MeanVFE)")
        self.num_point_features = int(num_point_features)

    def get_output_feature_dim(self):
        return self.num_point_features

    def feature_specs(self, info):
        return {"voxel_features": FeatureSpec(self.num_point_features, "sparse_rows", coord_key="voxel_coords",
                                              count_key="voxel_num_points")}

    def forward(self, batch_dict):
        voxels, counts = batch_dict["voxels"], batch_dict["voxel_num_points"]
        total = voxels[:, :, :].sum(dim=1, keepdim=False)
        norm = torch.clamp_min(counts.view(-1, 1), 1.0).type_as(voxels)
        batch_dict["voxel_features"] = (total / norm).contiguous()
        return batch_dict
