"""ResidualCoder: diagonal-normalised residuals, exact round trip, sin/cos angle variant."""
import math

import numpy as np
import pytest
import torch

from pcdet.utils.box_coder_utils import ResidualCoder


def _boxes(n, seed, extra=0):
    g = torch.Generator().manual_seed(seed)
    xyz = torch.rand(n, 3, generator=g, dtype=torch.float64) * 40 - 20
    dims = torch.rand(n, 3, generator=g, dtype=torch.float64) * 4 + 0.3
    rot = (torch.rand(n, 1, generator=g, dtype=torch.float64) * 2 - 1) * math.pi
    ext = torch.rand(n, extra, generator=g, dtype=torch.float64) * 2 - 1
    return torch.cat([xyz, dims, rot, ext], dim=1)


def test_encode_values_by_hand():
    coder = ResidualCoder()
    anchor = torch.tensor([[1.0, 2.0, -1.0, 3.0, 4.0, 2.0, 0.5]])
    box = torch.tensor([[6.0, -3.0, 0.0, 6.0, 2.0, 1.0, 1.5]])
    t = coder.encode_torch(box, anchor)[0].tolist()
    expect = [5 / 5, -5 / 5, 1 / 2, math.log(2), math.log(0.5), math.log(0.5), 1.0]
    assert t == pytest.approx(expect, abs=1e-6)
    assert coder.encode_torch(anchor, anchor).abs().max() < 1e-7


@pytest.mark.parametrize("extra", [0, 2])
def test_round_trip(extra):
    coder = ResidualCoder(code_size=7 + extra)
    boxes, anchors = _boxes(500, 0, extra), _boxes(500, 1, extra)
    enc = coder.encode_torch(boxes, anchors)
    assert enc.shape == (500, coder.code_size)
    dec = coder.decode_torch(enc, anchors)
    torch.testing.assert_close(dec, boxes, rtol=1e-9, atol=1e-9)


def test_round_trip_sincos_wraps_angle():
    coder = ResidualCoder(code_size=7, encode_angle_by_sincos=True)
    assert coder.code_size == 8
    boxes, anchors = _boxes(300, 2), _boxes(300, 3)
    dec = coder.decode_torch(coder.encode_torch(boxes, anchors), anchors)
    torch.testing.assert_close(dec[:, :6], boxes[:, :6], rtol=1e-9, atol=1e-9)
    diff = torch.remainder(dec[:, 6] - boxes[:, 6] + math.pi, 2 * math.pi) - math.pi
    assert diff.abs().max() < 1e-9


def test_batched_shapes_and_float32():
    coder = ResidualCoder()
    boxes, anchors = _boxes(24, 4).float().view(2, 12, 7), _boxes(24, 5).float().view(2, 12, 7)
    dec = coder.decode_torch(coder.encode_torch(boxes, anchors), anchors)
    assert dec.shape == (2, 12, 7)
    np.testing.assert_allclose(dec.numpy(), boxes.numpy(), rtol=1e-4, atol=1e-4)


def test_rejects_unknown_option():
    with pytest.raises(TypeError, match="unexpected option"):
        ResidualCoder(code_size=7, encode_by_magic=True)
