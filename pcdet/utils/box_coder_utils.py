"""Box coders: regression targets between ground-truth (or predicted) boxes and anchors.

Owns :class:`ResidualCoder`, the residual encoding used by SECOND / PointPillars heads
(torch tensors in and out). For an anchor ``a`` and a box ``g`` (both ``[x, y, z, dx, dy, dz,
heading, *extra]``), with ``d = sqrt(dx_a**2 + dy_a**2)`` the anchor's BEV diagonal::

    t_x = (x_g - x_a) / d        t_y = (y_g - y_a) / d        t_z = (z_g - z_a) / dz_a
    t_dx = log(dx_g / dx_a)      t_dy = log(dy_g / dy_a)      t_dz = log(dz_g / dz_a)
    t_r = r_g - r_a              (or cos r_g - cos r_a, sin r_g - sin r_a with encode_angle_by_sincos)
    t_extra = extra_g - extra_a

``decode_torch`` inverts it exactly (up to float rounding; with the sin/cos form the decoded angle
is ``atan2`` of the decoded sine and cosine, i.e. wrapped to (-pi, pi]).
"""
import torch

from pcdet.utils.registry import Registry

#: ``TARGET_ASSIGNER_CONFIG.BOX_CODER`` -> box coder class
BOX_CODERS = Registry("box_coder", "MODEL.DENSE_HEAD.TARGET_ASSIGNER_CONFIG.BOX_CODER: box encodings")


@BOX_CODERS.register()
class ResidualCoder:
    """Residual box coder; ``code_size`` counts the encoded values (7 + extras, +1 with sincos)."""

    def __init__(self, code_size=7, encode_angle_by_sincos=False, **kwargs):
        if kwargs:
            raise TypeError(f"ResidualCoder: unexpected option(s) {sorted(kwargs)}")
        if code_size < 7:
            raise ValueError(f"ResidualCoder: code_size must be >= 7, got {code_size}")
        self.box_size = code_size  # values per box (without the extra sincos slot)
        self.encode_angle_by_sincos = encode_angle_by_sincos
        self.code_size = code_size + 1 if encode_angle_by_sincos else code_size

    def encode_torch(self, boxes, anchors):
        """(..., box_size) boxes, (..., box_size) anchors -> (..., code_size) targets."""
        anchors = anchors.clone()
        anchors[..., 3:6] = torch.clamp_min(anchors[..., 3:6], 1e-5)
        boxes = boxes.clone()
        boxes[..., 3:6] = torch.clamp_min(boxes[..., 3:6], 1e-5)

        xa, ya, za, dxa, dya, dza, ra = torch.split(anchors[..., :7], 1, dim=-1)
        xg, yg, zg, dxg, dyg, dzg, rg = torch.split(boxes[..., :7], 1, dim=-1)
        diagonal = torch.sqrt(dxa**2 + dya**2)
        parts = [
            (xg - xa) / diagonal,
            (yg - ya) / diagonal,
            (zg - za) / dza,
            torch.log(dxg / dxa),
            torch.log(dyg / dya),
            torch.log(dzg / dza),
        ]
        if self.encode_angle_by_sincos:
            parts += [torch.cos(rg) - torch.cos(ra), torch.sin(rg) - torch.sin(ra)]
        else:
            parts.append(rg - ra)
        parts.append(boxes[..., 7:] - anchors[..., 7:])
        return torch.cat(parts, dim=-1)

    def decode_torch(self, box_encodings, anchors):
        """(..., code_size) encodings, (..., box_size) anchors -> (..., box_size) boxes."""
        xa, ya, za, dxa, dya, dza, ra = torch.split(anchors[..., :7], 1, dim=-1)
        diagonal = torch.sqrt(dxa**2 + dya**2)
        xt, yt, zt, dxt, dyt, dzt = torch.split(box_encodings[..., :6], 1, dim=-1)
        out = [
            xt * diagonal + xa,
            yt * diagonal + ya,
            zt * dza + za,
            torch.exp(dxt) * dxa,
            torch.exp(dyt) * dya,
            torch.exp(dzt) * dza,
        ]
        if self.encode_angle_by_sincos:
            cost, sint = box_encodings[..., 6:7], box_encodings[..., 7:8]
            out.append(torch.atan2(sint + torch.sin(ra), cost + torch.cos(ra)))
            extra = box_encodings[..., 8:]
        else:
            out.append(box_encodings[..., 6:7] + ra)
            extra = box_encodings[..., 7:]
        out.append(extra + anchors[..., 7:])
        return torch.cat(out, dim=-1)
