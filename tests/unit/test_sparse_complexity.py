"""Sparse-convolution MAC counting of ``benchmark.complexity``: the pair counter against a brute-force
count over sites, and its relation to spconv 2's own rulebook (a submanifold conv stores half of the
symmetric offsets and computes the centre apart, so pairs = 2 * sum(indice_pair_num) + sites; a
strided conv stores every pair)."""
import itertools

import torch

from benchmark.complexity import count_kernel_pairs
from pcdet.utils.spconv_utils import spconv

SHAPE = (12, 10, 6)


def _sites(seed, n=150, batch=2):
    g = torch.Generator().manual_seed(seed)
    flat = torch.randperm(batch * SHAPE[0] * SHAPE[1] * SHAPE[2], generator=g)[:n]
    per = SHAPE[0] * SHAPE[1] * SHAPE[2]
    b, r = flat // per, flat % per
    return torch.stack([b, r // (SHAPE[1] * SHAPE[2]), (r // SHAPE[2]) % SHAPE[1], r % SHAPE[2]], 1).int()


def _brute(in_idx, out_idx, kernel, stride, padding):
    outs = {tuple(x) for x in out_idx.tolist()}
    n = 0
    for b, *i in in_idx.tolist():
        for off in itertools.product(*[range(k) for k in kernel]):
            c = [i[d] + padding[d] - off[d] for d in range(3)]
            if all(c[d] % stride[d] == 0 for d in range(3)) and (b, *[c[d] // stride[d] for d in range(3)]) in outs:
                n += 1
    return n


def test_submanifold_pairs_equal_brute_force_and_spconv_half_storage():
    idx = _sites(0)
    for kernel in ((3, 3, 3), (1, 3, 3), (3, 1, 3), (1, 1, 3)):
        conv = spconv.SubMConv3d(2, 2, kernel, padding=tuple(k // 2 for k in kernel), bias=False, indice_key="k")
        out = conv(spconv.SparseConvTensor(torch.randn(len(idx), 2), idx, list(SHAPE), 2))
        pad = [k // 2 for k in kernel]
        n = count_kernel_pairs(idx, out.indices, out.spatial_shape, kernel, [1, 1, 1], pad, [1, 1, 1])
        assert n == _brute(idx, out.indices, kernel, (1, 1, 1), pad)
        assert n == 2 * int(out.indice_dict["k"].indice_pair_num.sum()) + len(idx)


def test_strided_conv_pairs_equal_brute_force_and_spconv_rulebook():
    idx = _sites(1)
    for stride in ((2, 2, 2), (2, 2, 1)):
        conv = spconv.SparseConv3d(2, 2, 3, stride=stride, padding=1, bias=False, indice_key="p")
        out = conv(spconv.SparseConvTensor(torch.randn(len(idx), 2), idx, list(SHAPE), 2))
        n = count_kernel_pairs(idx, out.indices, out.spatial_shape, (3, 3, 3), stride, [1, 1, 1], [1, 1, 1])
        assert n == _brute(idx, out.indices, (3, 3, 3), stride, (1, 1, 1))
        assert n == int(out.indice_dict["p"].indice_pair_num.sum())
