"""VoxelBackBone8x: SECOND's sparse 3D encoder (OpenPCDet ``spconv_backbone.py``), widths from config.

Topology (OpenPCDet ``VoxelBackBone8x``; mmdet3d ``SparseEncoder`` with base 16 and encoder channels
((16,), (32, 32, 32), (64, 64, 64), (64, 64, 64)) is the same network), each convolution bias-free and
followed by BatchNorm1d (eps 1e-3, momentum 0.01) and ReLU:

* conv_input: SubM 3^3, C_in -> w0 (indice key ``subm1``); conv1: SubM w0 -> w1 (``subm1``);
* conv2: SparseConv 3^3 stride 2 padding 1, w1 -> w2 (``spconv2``), then 2 x SubM w2 (``subm2``);
* conv3: the same to w3 (``spconv3``, ``subm3``);
* conv4: SparseConv 3^3 stride 2 padding (0, 1, 1), w3 -> w4 (``spconv4``), then 2 x SubM w4 (``subm4``);
* conv_out: SparseConv (3, 1, 1) stride (2, 1, 1), w4 -> ``OUT_CHANNELS`` (``spconv_down2``).

``WIDTHS`` = [w0, w1, w2, w3, w4] (default OpenPCDet's hard-coded 16, 16, 32, 64, 64) and ``OUT_CHANNELS``
(default 128) come from config, since the PointDistiller students scale every width, the 3D encoder's
included (4x: 8, 8, 16, 32, 32 -> 64; 16x: 4, 4, 8, 16, 16 -> 32). The sparse shape is the voxel grid
(z, y, x) with one extra z cell, as OpenPCDet (``grid_size[::-1] + [1, 0, 0]``): 41 x 1600 x 1408 on KITTI,
so the output has 2 z cells. SubM convolutions of one stage share a rulebook (same kernel), each
strided convolution has its own key (spconv 2 refuses shared keys across kernel shapes).

Reads ``voxel_features`` (V, C_in), ``voxel_coords`` (V, 4) [b, z, y, x], ``batch_size``. Writes
``encoded_spconv_tensor`` (the conv_out output, stride 8), ``encoded_spconv_tensor_stride`` (8) and
``multi_scale_3d_features`` (``x_conv1`` .. ``x_conv4``, strides 1, 2, 4, 8).
"""
import numpy as np
import torch.nn as nn

from pcdet.config import ConfigError, check_keys
from pcdet.models.model_template import FeatureSpec
from pcdet.models.registries import BACKBONES_3D
from pcdet.utils.spconv_utils import sparse_precision, spconv

DEFAULT_WIDTHS = (16, 16, 32, 64, 64)


def _block(c_in, c_out, kernel, indice_key, stride=1, padding=0, conv="subm"):
    if conv == "subm":
        layer = spconv.SubMConv3d(c_in, c_out, kernel, bias=False, indice_key=indice_key)
    else:
        layer = spconv.SparseConv3d(c_in, c_out, kernel, stride=stride, padding=padding, bias=False,
                                    indice_key=indice_key)
    return spconv.SparseSequential(layer, nn.BatchNorm1d(c_out, eps=1e-3, momentum=0.01), nn.ReLU())


@BACKBONES_3D.register()
class VoxelBackBone8x(nn.Module):
    ALLOWED_KEYS = {"NAME", "WIDTHS", "OUT_CHANNELS"}

    def __init__(self, model_cfg, input_channels, grid_size, **kwargs):
        super().__init__()
        check_keys(model_cfg, self.ALLOWED_KEYS, "MODEL.BACKBONE_3D (VoxelBackBone8x)")
        w = [int(v) for v in model_cfg.get("WIDTHS", DEFAULT_WIDTHS)]
        out = int(model_cfg.get("OUT_CHANNELS", 128))
        if len(w) != 5 or min(w + [out]) < 1:
            raise ConfigError(f"MODEL.BACKBONE_3D.WIDTHS must be 5 positive widths, got {w} (OUT_CHANNELS {out})")
        self.sparse_shape = (np.asarray(grid_size, dtype=np.int64)[::-1] + [1, 0, 0]).tolist()
        self.conv_input = _block(input_channels, w[0], 3, "subm1")
        self.conv1 = spconv.SparseSequential(_block(w[0], w[1], 3, "subm1"))
        self.conv2 = spconv.SparseSequential(_block(w[1], w[2], 3, "spconv2", 2, 1, "spconv"),
                                             _block(w[2], w[2], 3, "subm2"), _block(w[2], w[2], 3, "subm2"))
        self.conv3 = spconv.SparseSequential(_block(w[2], w[3], 3, "spconv3", 2, 1, "spconv"),
                                             _block(w[3], w[3], 3, "subm3"), _block(w[3], w[3], 3, "subm3"))
        self.conv4 = spconv.SparseSequential(_block(w[3], w[4], 3, "spconv4", 2, (0, 1, 1), "spconv"),
                                             _block(w[4], w[4], 3, "subm4"), _block(w[4], w[4], 3, "subm4"))
        self.conv_out = _block(w[4], out, (3, 1, 1), "spconv_down2", (2, 1, 1), 0, "spconv")
        self.num_point_features = out
        self.backbone_channels = {"x_conv1": w[1], "x_conv2": w[2], "x_conv3": w[3], "x_conv4": w[4]}

    def feature_specs(self, info):
        return {"encoded_spconv_tensor": FeatureSpec(self.num_point_features, "sparse_tensor",
                                                     coord_key="voxel_coords", stride=8)}

    def forward(self, batch_dict):
        with sparse_precision(batch_dict["voxel_features"]) as feats:
            x = spconv.SparseConvTensor(feats, batch_dict["voxel_coords"].int(), self.sparse_shape,
                                        int(batch_dict["batch_size"]))
            x = self.conv_input(x)
            x_conv1 = self.conv1(x)
            x_conv2 = self.conv2(x_conv1)
            x_conv3 = self.conv3(x_conv2)
            x_conv4 = self.conv4(x_conv3)
            batch_dict["encoded_spconv_tensor"] = self.conv_out(x_conv4)
        batch_dict["encoded_spconv_tensor_stride"] = 8
        batch_dict["multi_scale_3d_features"] = {"x_conv1": x_conv1, "x_conv2": x_conv2, "x_conv3": x_conv3,
                                                 "x_conv4": x_conv4}
        return batch_dict
