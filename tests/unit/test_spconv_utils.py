"""spconv compatibility layer: stream shim, single-thread CPU guard, exactness against dense conv3d.

Every numeric test runs with two torch threads, the setting in which spconv's CPU scatter-add
races when unguarded (upstream spconv issue #679), and compares outputs and gradients with a
dense ``torch.nn.functional.conv3d`` built from the same weights.
"""
import pytest
import torch
import torch.nn.functional as F

from pcdet.utils import spconv_utils
from pcdet.utils.spconv_utils import replace_feature, spconv

REL_TOL = 1e-5
SPATIAL = (24, 24, 24)
BATCH = 2
N_ACTIVE = 3000
C_IN, C_OUT = 16, 24
SEEDS = (0, 1, 2)


def _random_sparse_input(gen):
    """N_ACTIVE distinct active sites spread over BATCH grids; indices are (batch, z, y, x)."""
    d, h, w = SPATIAL
    flat = torch.randperm(BATCH * d * h * w, generator=gen)[:N_ACTIVE]
    b, rest = flat // (d * h * w), flat % (d * h * w)
    z, y, x = rest // (h * w), (rest // w) % h, rest % w
    indices = torch.stack([b, z, y, x], dim=1).int()
    features = torch.randn(N_ACTIVE, C_IN, generator=gen)
    return indices, features


def _to_dense(indices, features):
    idx = indices.long()
    grid = torch.zeros(BATCH, *SPATIAL, features.shape[1], dtype=features.dtype)
    grid = grid.index_put((idx[:, 0], idx[:, 1], idx[:, 2], idx[:, 3]), features)
    return grid.permute(0, 4, 1, 2, 3)  # (B, C, D, H, W)


def _dense_weight(weight):
    # spconv 2.x stores conv weights as (out, kz, ky, kx, in); conv3d wants (out, in, kz, ky, kx)
    assert weight.dim() == 5 and weight.shape[0] == C_OUT and weight.shape[-1] == C_IN
    return weight.permute(0, 4, 1, 2, 3)


def _rel_err(actual, expected):
    return ((actual - expected).abs().max() / expected.abs().max()).item()


def _make_module(kind, stride, padding, gen):
    if kind == "subm":
        module = spconv.SubMConv3d(C_IN, C_OUT, 3, bias=False)
    else:
        module = spconv.SparseConv3d(C_IN, C_OUT, 3, stride=stride, padding=padding, bias=False)
    with torch.no_grad():
        module.weight.copy_(torch.randn(module.weight.shape, generator=gen) * 0.2)
    return module


def _check_against_dense(kind, stride, padding, seed):
    gen = torch.Generator().manual_seed(seed)
    indices, features = _random_sparse_input(gen)
    module = _make_module(kind, stride, padding, gen)

    feats = features.clone().requires_grad_(True)
    out = module(spconv.SparseConvTensor(feats, indices, list(SPATIAL), BATCH))
    assert torch.get_num_threads() == 2
    grad_out = torch.randn(out.features.shape, generator=gen)
    (out.features * grad_out).sum().backward()  # CPU backward: needs the stream shim
    assert torch.get_num_threads() == 2
    assert feats.grad is not None and module.weight.grad is not None

    # dense reference with the same weights
    ref_feats = features.clone().requires_grad_(True)
    ref_weight = module.weight.detach().clone().requires_grad_(True)
    dense_in = _to_dense(indices, ref_feats)
    if kind == "subm":
        dense_out = F.conv3d(dense_in, _dense_weight(ref_weight), padding=1)
    else:
        dense_out = F.conv3d(dense_in, _dense_weight(ref_weight), stride=stride, padding=padding)
    assert list(out.spatial_shape) == list(dense_out.shape[2:])

    out_idx = out.indices.long()
    if kind == "subm":
        # submanifold: output exactly at the active input sites
        assert torch.equal(out.indices, indices)
    else:
        # regular sparse conv: every site whose receptive field touches an active input
        mask = _to_dense(indices, torch.ones(N_ACTIVE, 1))
        touched = F.conv3d(mask, torch.ones(1, 1, 3, 3, 3), stride=stride, padding=padding)[:, 0] > 0
        expected_sites = set(map(tuple, touched.nonzero().tolist()))
        got_sites = set(map(tuple, out_idx.tolist()))
        assert len(got_sites) == out_idx.shape[0]
        assert got_sites == expected_sites

    ref_out = dense_out.permute(0, 2, 3, 4, 1)[out_idx[:, 0], out_idx[:, 1], out_idx[:, 2], out_idx[:, 3]]
    (ref_out * grad_out).sum().backward()

    errors = {
        "output": _rel_err(out.features.detach(), ref_out.detach()),
        "grad_input": _rel_err(feats.grad, ref_feats.grad),
        "grad_weight": _rel_err(module.weight.grad, ref_weight.grad),
    }
    bad = {k: v for k, v in errors.items() if not v <= REL_TOL}
    assert not bad, f"{kind} stride={stride} padding={padding} seed={seed}: {errors}"


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize(
    "kind,stride,padding",
    [("subm", 1, 1), ("conv", 1, 0), ("conv", 1, 1), ("conv", 2, 0), ("conv", 2, 1)],
)
def test_matches_dense_conv3d_with_two_threads(two_threads, kind, stride, padding, seed):
    _check_against_dense(kind, stride, padding, seed)


def test_guard_is_installed_and_ops_see_one_thread(two_threads, monkeypatch):
    assert spconv_utils.is_cpu_thread_guard_active()
    for name in ("indice_conv", "indice_conv_backward", "get_indice_pairs"):
        assert getattr(spconv.ops, name).__name__ == name
        assert getattr(getattr(spconv.ops, name), "_pcdet_spconv_patch", None) == "thread_guard"

    # record the thread count at the racy kernel itself, inside spconv's op
    seen = {"phase": None, "forward": [], "backward": []}
    real_ops = spconv.ops.SpconvOps

    class RecordingOps:
        def __getattr__(self, name):
            return getattr(real_ops, name)

        @staticmethod
        def scatter_add_cpu(*args):
            bundled = spconv_utils._bundled_omp
            bundled_threads = bundled.omp_get_max_threads() if bundled is not None else 1
            seen[seen["phase"]].append((torch.get_num_threads(), bundled_threads))
            return real_ops.scatter_add_cpu(*args)

    monkeypatch.setattr(spconv.ops, "SpconvOps", RecordingOps())
    gen = torch.Generator().manual_seed(5)
    indices, features = _random_sparse_input(gen)
    feats = features.requires_grad_(True)
    module = _make_module("conv", 1, 1, gen)
    seen["phase"] = "forward"
    out = module(spconv.SparseConvTensor(feats, indices, list(SPATIAL), BATCH))
    seen["phase"] = "backward"
    out.features.sum().backward()
    assert seen["forward"] and set(seen["forward"]) == {(1, 1)}
    assert seen["backward"] and set(seen["backward"]) == {(1, 1)}
    assert torch.get_num_threads() == 2


def test_guard_wrapper_restores_threads_and_skips_non_cpu_tensors(two_threads):
    bundled = spconv_utils._bundled_omp
    bundled_before = bundled.omp_get_max_threads() if bundled is not None else None
    seen = []

    def op(tensor, fail=False):
        seen.append(torch.get_num_threads())
        if fail:
            raise RuntimeError("boom")
        return tensor

    guarded = spconv_utils._make_thread_guard(op)
    guarded(torch.zeros(3))
    guarded(torch.zeros(3, device="meta"))  # not a CPU tensor: left alone
    guarded(tensor=torch.zeros(3))  # tensor passed by keyword
    with pytest.raises(RuntimeError):
        guarded(torch.zeros(3), fail=True)
    assert seen == [1, 2, 1, 1]
    assert torch.get_num_threads() == 2
    if bundled is not None:
        assert bundled.omp_get_max_threads() == bundled_before

    torch.set_num_threads(1)
    guarded(torch.zeros(3))
    assert torch.get_num_threads() == 1


def test_disabled_context_turns_guard_off_and_back_on(two_threads):
    seen = []
    guarded = spconv_utils._make_thread_guard(lambda t: seen.append(torch.get_num_threads()))
    with spconv_utils.cpu_thread_guard_disabled():
        assert not spconv_utils.is_cpu_thread_guard_active()
        guarded(torch.zeros(1))
    assert spconv_utils.is_cpu_thread_guard_active()
    guarded(torch.zeros(1))
    assert seen == [2, 1]


def test_install_is_idempotent():
    before = {name: getattr(spconv.ops, name) for name in spconv_utils.GUARDED_OPS if hasattr(spconv.ops, name)}
    stream_before = spconv.ops.get_current_stream
    spconv_utils.install()
    spconv_utils.install()
    for name, fn in before.items():
        assert getattr(spconv.ops, name) is fn
        assert getattr(fn.__wrapped__, "_pcdet_spconv_patch", None) is None  # wrapped exactly once
    assert spconv.ops.get_current_stream is stream_before
    assert getattr(stream_before.__wrapped__, "_pcdet_spconv_patch", None) is None


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only stream shim")
def test_stream_shim_returns_zero_without_cuda():
    from spconv.pytorch import cppcore, hash as spconv_hash

    assert spconv_utils.is_stream_shim_installed()
    assert cppcore.get_current_stream() == 0
    assert spconv.ops.get_current_stream() == 0
    assert spconv_hash.get_current_stream() == 0


def test_replace_feature_keeps_indices():
    gen = torch.Generator().manual_seed(3)
    indices, features = _random_sparse_input(gen)
    x = spconv.SparseConvTensor(features, indices, list(SPATIAL), BATCH)
    new = torch.randn(N_ACTIVE, 4, generator=gen)
    y = replace_feature(x, new)
    assert y.features is new
    assert torch.equal(y.indices, indices)
    assert list(y.spatial_shape) == list(SPATIAL) and y.batch_size == BATCH
