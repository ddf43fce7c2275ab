"""Cylinder3D's asymmetric 3D sparse UNet with the dimension-decomposition context module (DDCM).

Follows xinge008/Cylinder3D ``network/segmentator_3d_asymm_spconv.py`` (``Asymm_3d_spconv``) layer for
layer, widths as multiples of ``INIT_SIZE`` = s (the original 32; Cylinder3D_0.5x 16):

==============  ============================================================================  =========
block           layers                                                                        out
==============  ============================================================================  =========
downCntx        A: SubM(1,3,3) -> SubM(3,1,3); B: SubM(3,1,3) -> SubM(1,3,3); A + B            s
resBlock2..5    A: (3,1,3) -> (1,3,3); B: (1,3,3) -> (3,1,3); A + B; pool = SparseConv3d k3 p1  2s, 4s, 8s, 16s
                stride (2,2,2) (blocks 2, 3: "height pooling") or (2,2,1) (blocks 4, 5); returns
                (pooled, pre-pool skip)
upBlock0..3     SubM 3x3x3 at the coarse level; SparseInverseConv3d k3 (the matching pool's       16s, 8s, 4s, 2s
                indices); + skip; SubM (1,3,3), (3,1,3), 3x3x3
ReconNet        DDCM: SubM (3,1,1), (1,3,1), (1,1,3), each BN + Sigmoid, summed, times input   2s
concat          [DDCM output, upBlock3 output]                                                 4s
==============  ============================================================================  =========

Every convolution is bias-free; each block applies conv -> LeakyReLU -> BN (DDCM: conv -> BN ->
Sigmoid), BN initialised to weight 1, bias 0 (PyTorch's default). The logits layer (SubM 3x3x3 over
the 4s concat) lives in the segmentation head (:mod:`pcdet.models.seg_heads.cylinder_seg_head`).

spconv 2 rules (the original was written for spconv 1.2): submanifold convolutions that share an
``indice_key`` must share their kernel shape, so keys are one per (resolution level, kernel shape),
``subm{level}_{kernel}``; the rulebook of a key is reused by every layer at that level with that
kernel (SubM outputs keep their input sites, so this is exact). Pools use ``pool{level}`` and the
inverse convolution of an up block reuses its pool's key, which restores the finer sites exactly.

Reads ``voxel_features`` (V, C_in) and ``voxel_coords`` (V, 4) ``[batch, rho, phi, z]`` (the cylinder
VFE). Writes ``unet_features`` (V, 4s): the concat features, one row per voxel in the order of
``voxel_coords``, ``decoder_features`` (V, 2s): the last up block's output, i.e. the encoder-decoder's
output before DDCM (the voxel features that segmentation distillation reads), and
``unet_sparse_tensor`` (the concat as an spconv tensor, for the logits layer).
"""
import numpy as np
import torch
import torch.nn as nn

from pcdet.config import check_keys
from pcdet.models.model_template import FeatureSpec
from pcdet.models.registries import BACKBONES_3D
from pcdet.utils.spconv_utils import replace_feature, sparse_precision, spconv

K133, K313, K333 = (1, 3, 3), (3, 1, 3), (3, 3, 3)
K311, K131, K113 = (3, 1, 1), (1, 3, 1), (1, 1, 3)


def _name(kernel):
    return "".join(str(k) for k in kernel)


def subm(c_in, c_out, kernel, level):
    """Bias-free submanifold conv with the key of its (level, kernel shape)."""
    return spconv.SubMConv3d(c_in, c_out, kernel_size=kernel, stride=1, padding=tuple(k // 2 for k in kernel),
                             bias=False, indice_key=f"subm{level}_{_name(kernel)}")


class _ConvActBN(nn.Module):
    """spconv conv -> LeakyReLU -> BatchNorm1d on the features (the original's order)."""

    def __init__(self, conv, channels, act=None):
        super().__init__()
        self.conv = conv
        self.act = nn.LeakyReLU() if act is None else act
        self.bn = nn.BatchNorm1d(channels)

    def forward(self, x):
        x = self.conv(x)
        return replace_feature(x, self.bn(self.act(x.features)))


class ResContextBlock(nn.Module):
    def __init__(self, c_in, c_out, level):
        super().__init__()
        self.a1 = _ConvActBN(subm(c_in, c_out, K133, level), c_out)
        self.a2 = _ConvActBN(subm(c_out, c_out, K313, level), c_out)
        self.b1 = _ConvActBN(subm(c_in, c_out, K313, level), c_out)
        self.b2 = _ConvActBN(subm(c_out, c_out, K133, level), c_out)

    def forward(self, x):
        shortcut = self.a2(self.a1(x))
        res = self.b2(self.b1(x))
        return replace_feature(res, res.features + shortcut.features)


class ResBlock(nn.Module):
    """Residual block at ``level`` followed by a pool to ``level + 1``; returns (pooled, pre-pool)."""

    def __init__(self, c_in, c_out, level, height_pooling):
        super().__init__()
        self.a1 = _ConvActBN(subm(c_in, c_out, K313, level), c_out)
        self.a2 = _ConvActBN(subm(c_out, c_out, K133, level), c_out)
        self.b1 = _ConvActBN(subm(c_in, c_out, K133, level), c_out)
        self.b2 = _ConvActBN(subm(c_out, c_out, K313, level), c_out)
        stride = (2, 2, 2) if height_pooling else (2, 2, 1)
        self.pool = spconv.SparseConv3d(c_out, c_out, kernel_size=3, stride=stride, padding=1, bias=False,
                                        indice_key=f"pool{level + 1}")

    def forward(self, x):
        shortcut = self.a2(self.a1(x))
        res = self.b2(self.b1(x))
        res = replace_feature(res, res.features + shortcut.features)
        return self.pool(res), res


class UpBlock(nn.Module):
    """From ``level + 1`` (coarse) to ``level``: SubM 3x3x3, inverse conv with the pool's key, + skip, 3 SubMs."""

    def __init__(self, c_in, c_out, level):
        super().__init__()
        self.trans = _ConvActBN(subm(c_in, c_out, K333, level + 1), c_out)
        self.up = spconv.SparseInverseConv3d(c_out, c_out, kernel_size=3, bias=False, indice_key=f"pool{level + 1}")
        self.c1 = _ConvActBN(subm(c_out, c_out, K133, level), c_out)
        self.c2 = _ConvActBN(subm(c_out, c_out, K313, level), c_out)
        self.c3 = _ConvActBN(subm(c_out, c_out, K333, level), c_out)

    def forward(self, x, skip):
        up = self.up(self.trans(x))
        up = replace_feature(up, up.features + skip.features)
        return self.c3(self.c2(self.c1(up)))


class ReconBlock(nn.Module):
    """DDCM: three 1-D convolutions, each BN + Sigmoid, summed and multiplied with the input."""

    def __init__(self, c_in, c_out, level):
        super().__init__()
        self.branches = nn.ModuleList()
        for kernel in (K311, K131, K113):
            self.branches.append(nn.ModuleDict({"conv": subm(c_in, c_out, kernel, level),
                                                "bn": nn.BatchNorm1d(c_out)}))
        self.act = nn.Sigmoid()

    def forward(self, x):
        total = None
        for br in self.branches:
            y = br["conv"](x)
            f = self.act(br["bn"](y.features))
            total = f if total is None else total + f
        return replace_feature(y, total * x.features)


@BACKBONES_3D.register("Asymm3DUNet")
class Asymm3DUNet(nn.Module):
    ALLOWED_KEYS = {"NAME", "INIT_SIZE"}

    def __init__(self, model_cfg, input_channels, grid_size, **kwargs):
        super().__init__()
        check_keys(model_cfg, self.ALLOWED_KEYS, "MODEL.BACKBONE_3D (Asymm3DUNet)")
        s = int(model_cfg.get("INIT_SIZE", 32))
        self.sparse_shape = np.asarray(grid_size, dtype=np.int64).tolist()
        self.down_cntx = ResContextBlock(input_channels, s, level=0)
        self.res2 = ResBlock(s, 2 * s, level=0, height_pooling=True)
        self.res3 = ResBlock(2 * s, 4 * s, level=1, height_pooling=True)
        self.res4 = ResBlock(4 * s, 8 * s, level=2, height_pooling=False)
        self.res5 = ResBlock(8 * s, 16 * s, level=3, height_pooling=False)
        self.up0 = UpBlock(16 * s, 16 * s, level=3)
        self.up1 = UpBlock(16 * s, 8 * s, level=2)
        self.up2 = UpBlock(8 * s, 4 * s, level=1)
        self.up3 = UpBlock(4 * s, 2 * s, level=0)
        self.recon = ReconBlock(2 * s, 2 * s, level=0)
        self.init_size = s
        self.num_point_features = 4 * s

    def feature_specs(self, info):
        return {"unet_features": FeatureSpec(self.num_point_features, "sparse_rows", coord_key="voxel_coords"),
                "decoder_features": FeatureSpec(2 * self.init_size, "sparse_rows", coord_key="voxel_coords"),
                "unet_sparse_tensor": FeatureSpec(self.num_point_features, "sparse_tensor",
                                                  coord_key="voxel_coords", stride=1)}

    def forward(self, batch_dict):
        coords = batch_dict["voxel_coords"].int()
        with sparse_precision(batch_dict["voxel_features"]) as feats:
            x = spconv.SparseConvTensor(feats, coords, self.sparse_shape, int(batch_dict["batch_size"]))
            x = self.down_cntx(x)
            d1c, d1b = self.res2(x)
            d2c, d2b = self.res3(d1c)
            d3c, d3b = self.res4(d2c)
            d4c, d4b = self.res5(d3c)
            u4 = self.up0(d4c, d4b)
            u3 = self.up1(u4, d3b)
            u2 = self.up2(u3, d2b)
            u1 = self.up3(u2, d1b)
            u0 = self.recon(u1)
            out = replace_feature(u0, torch.cat([u0.features, u1.features], dim=1))
        batch_dict["unet_sparse_tensor"] = out
        batch_dict["unet_features"] = out.features
        batch_dict["decoder_features"] = u1.features  # the encoder-decoder's output, before DDCM
        return batch_dict
