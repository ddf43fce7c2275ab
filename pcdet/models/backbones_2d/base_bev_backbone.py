"""SECOND-style 2D BEV backbone: strided conv stages, each upsampled and concatenated.

Reads ``spatial_features`` (B, C_in, ny, nx); writes ``spatial_features_2d`` (B, C_out, ny/s0, nx/s0)
and, per stage ``i``, ``spatial_features_%dx`` (the stage output at its cumulative stride) and
``spatial_features_%dx_preact`` (the same before the stage's last ReLU: the BN output, for KD methods
that distil pre-activations). Every stage ends with Conv-BN-ReLU (:meth:`stage_output_bn` is that BN).
Config: LAYER_NUMS, LAYER_STRIDES, NUM_FILTERS (one entry per stage), UPSAMPLE_STRIDES,
NUM_UPSAMPLE_FILTERS (one entry per stage; a stride < 1 means a strided conv down). C_in comes from
the previous module (``num_bev_features``), never from the config.
"""
import numpy as np
import torch
import torch.nn as nn

from pcdet.config import check_keys
from pcdet.models.model_template import FeatureSpec
from pcdet.models.registries import BACKBONES_2D


def _conv_bn_relu(c_in, c_out, stride=1):
    return [
        nn.ZeroPad2d(1) if stride > 1 else nn.Identity(),
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=0 if stride > 1 else 1, bias=False),
        nn.BatchNorm2d(c_out, eps=1e-3, momentum=0.01),
        nn.ReLU(),
    ]


@BACKBONES_2D.register()
class BaseBEVBackbone(nn.Module):
    ALLOWED_KEYS = {"NAME", "LAYER_NUMS", "LAYER_STRIDES", "NUM_FILTERS", "UPSAMPLE_STRIDES", "NUM_UPSAMPLE_FILTERS"}

    def __init__(self, model_cfg, input_channels, input_stride=1, **kwargs):
        super().__init__()
        self.input_stride = int(input_stride)  # of the input map w.r.t. the voxel grid
        check_keys(model_cfg, self.ALLOWED_KEYS, "MODEL.BACKBONE_2D")
        self.model_cfg = model_cfg
        layer_nums = list(model_cfg.get("LAYER_NUMS", []))
        layer_strides = list(model_cfg.get("LAYER_STRIDES", []))
        num_filters = list(model_cfg.get("NUM_FILTERS", []))
        if not (len(layer_nums) == len(layer_strides) == len(num_filters)):
            raise ValueError(
                f"MODEL.BACKBONE_2D: LAYER_NUMS {layer_nums}, LAYER_STRIDES {layer_strides} and "
                f"NUM_FILTERS {num_filters} must have the same length"
            )
        up_strides = list(model_cfg.get("UPSAMPLE_STRIDES", []))
        up_filters = list(model_cfg.get("NUM_UPSAMPLE_FILTERS", []))
        if len(up_strides) != len(up_filters):
            raise ValueError("MODEL.BACKBONE_2D: UPSAMPLE_STRIDES and NUM_UPSAMPLE_FILTERS must have the same length")

        self.blocks, self.deblocks = nn.ModuleList(), nn.ModuleList()
        self.cum_strides = []
        c_in, cum = input_channels, 1
        for i, (n, s, c) in enumerate(zip(layer_nums, layer_strides, num_filters)):
            layers = _conv_bn_relu(c_in, c, stride=s)
            for _ in range(n):
                layers += _conv_bn_relu(c, c)[1:]
            self.blocks.append(nn.Sequential(*[m for m in layers if not isinstance(m, nn.Identity)]))
            cum *= s
            self.cum_strides.append(cum)
            if i < len(up_strides):
                us, uc = up_strides[i], up_filters[i]
                if us >= 1:
                    us = int(round(us))
                    up = nn.ConvTranspose2d(c, uc, us, stride=us, bias=False)
                else:
                    k = int(np.round(1 / us))
                    up = nn.Conv2d(c, uc, k, stride=k, bias=False)
                self.deblocks.append(nn.Sequential(up, nn.BatchNorm2d(uc, eps=1e-3, momentum=0.01), nn.ReLU()))
            c_in = c
        c_out = sum(up_filters) if up_filters else c_in
        if len(up_strides) > len(layer_nums):  # one extra upsampling after the last stage
            us = int(up_strides[-1])
            self.deblocks.append(
                nn.Sequential(
                    nn.ConvTranspose2d(c_out, c_out, us, stride=us, bias=False),
                    nn.BatchNorm2d(c_out, eps=1e-3, momentum=0.01),
                    nn.ReLU(),
                )
            )
        self.num_bev_features = c_out
        self.stage_channels = list(num_filters)
        # stride of spatial_features_2d w.r.t. this backbone's input
        if self.deblocks and len(up_strides):
            out = self.cum_strides[0] / float(up_strides[0])
            if len(up_strides) > len(layer_nums):
                out /= float(up_strides[-1])
        else:
            out = self.cum_strides[-1] if self.cum_strides else 1
        self.output_stride = out

    def feature_specs(self, info):
        specs = {}
        for s, c in zip(self.cum_strides, self.stage_channels):
            for key in ("spatial_features_%dx" % s, "spatial_features_%dx_preact" % s):
                specs[key] = FeatureSpec(int(c), "dense_bev", stride=self.input_stride * s)
        out = self.input_stride * self.output_stride
        specs["spatial_features_2d"] = FeatureSpec(int(self.num_bev_features), "dense_bev",
                                                   stride=int(out) if float(out).is_integer() else out)
        return specs

    def stage_output_bn(self, i):
        """The BatchNorm feeding stage ``i``'s final ReLU (its gamma/beta describe the pre-activation)."""
        return self.blocks[i][-2]

    def forward(self, data_dict):
        x = data_dict["spatial_features"]
        ups = []
        for i, block in enumerate(self.blocks):
            pre = block[:-1](x)  # every block ends with a ReLU
            x = block[-1](pre)
            data_dict["spatial_features_%dx_preact" % self.cum_strides[i]] = pre
            data_dict["spatial_features_%dx" % self.cum_strides[i]] = x
            ups.append(self.deblocks[i](x) if len(self.deblocks) > 0 else x)
        x = torch.cat(ups, dim=1) if len(ups) > 1 else ups[0]
        if len(self.deblocks) > len(self.blocks):
            x = self.deblocks[-1](x)
        data_dict["spatial_features_2d"] = x
        return data_dict
