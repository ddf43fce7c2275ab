"""HeightCompression: SECOND's sparse 3D output stacked along height into a BEV map (OpenPCDet ``height_compression.py``).

Reads ``encoded_spconv_tensor`` (C channels, D x H x W cells) and its stride; writes ``spatial_features``
(B, C * D, H, W) = the dense tensor with channels and height cells merged (channel-major, as
OpenPCDet's ``view(N, C * D, H, W)``) and ``spatial_features_stride``. ``NUM_BEV_FEATURES`` must equal
C * D (256 on KITTI: 128 channels x 2 height cells).
"""
import torch.nn as nn

from pcdet.config import check_keys
from pcdet.models.model_template import FeatureSpec
from pcdet.models.registries import MAP_TO_BEV
from pcdet.utils.spconv_utils import to_dense


@MAP_TO_BEV.register()
class HeightCompression(nn.Module):
    ALLOWED_KEYS = {"NAME", "NUM_BEV_FEATURES"}
    bev_stride = 8  # VoxelBackBone8x's output stride

    def __init__(self, model_cfg, grid_size, num_point_features=None, **kwargs):
        super().__init__()
        check_keys(model_cfg, self.ALLOWED_KEYS, "MODEL.MAP_TO_BEV (HeightCompression)")
        depth = _encoded_depth(int(grid_size[2]) + 1)  # the encoder's sparse shape has one extra z cell
        self.num_bev_features = int(model_cfg.get("NUM_BEV_FEATURES", (num_point_features or 0) * depth))
        if num_point_features is not None and self.num_bev_features != num_point_features * depth:
            raise ValueError(f"MODEL.MAP_TO_BEV.NUM_BEV_FEATURES={self.num_bev_features} but the 3D backbone gives "
                             f"{num_point_features} channels x {depth} height cells = {num_point_features * depth}")

    def feature_specs(self, info):
        return {"spatial_features": FeatureSpec(self.num_bev_features, "dense_bev", stride=self.bev_stride)}

    def forward(self, batch_dict):
        dense = to_dense(batch_dict["encoded_spconv_tensor"])
        n, c, d, h, w = dense.shape
        batch_dict["spatial_features"] = dense.view(n, c * d, h, w)
        batch_dict["spatial_features_stride"] = batch_dict["encoded_spconv_tensor_stride"]
        return batch_dict


def _encoded_depth(nz):
    """Height cells of VoxelBackBone8x's output for a sparse shape of ``nz`` z cells (conv2 and conv3:
    kernel 3, stride 2, padding 1; conv4: padding 0 in z; conv_out: kernel 3, stride 2, no padding)."""
    for pad in (1, 1, 0):
        nz = (nz + 2 * pad - 3) // 2 + 1
    return (nz - 3) // 2 + 1
