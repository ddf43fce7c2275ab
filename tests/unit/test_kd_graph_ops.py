"""The fused graph-distillation loss against a straightforward materialised reference.

The reference builds every edge feature concat[x_j, x_i], runs the adapters' own Conv1d,
BatchNorm1d and ReLU on them and takes mean(phi_i (G_T - G_S)^2); the fast path must give the same
loss, the same gradients w.r.t. the student features and both adapters' parameters, and the same
BatchNorm running statistics.
"""
import copy

import pytest
import torch

from pcdet.kd.graph_ops import EdgeConvAdapter, EdgeGraph, graph_distill_loss
from pcdet.kd.knn import knn_per_sample


def reference_loss(x_t, x_s, graph, ad_t, ad_s, phi, max_pool_k=False):
    valid = graph.valid_mask()
    rows = torch.arange(graph.num_rows).unsqueeze(1).expand_as(graph.nbr)[valid]
    cols = graph.nbr[valid]

    def side(x, adapter):
        edges = torch.cat([x[cols], x[rows]], dim=1)  # concat[x_j, x_i], (E, 2C)
        return adapter(edges.t().unsqueeze(0))[0].t()  # (E, C_out)

    g_t, g_s = side(x_t, ad_t), side(x_s, ad_s)
    if not max_pool_k:
        return (phi[rows].unsqueeze(1) * (g_t - g_s) ** 2).mean()
    m, c = graph.num_rows, g_t.shape[1]
    index = rows.unsqueeze(1).expand(-1, c)
    pool_t = torch.full((m, c), -1e30, dtype=g_t.dtype).scatter_reduce(0, index, g_t, "amax")
    pool_s = torch.full((m, c), -1e30, dtype=g_s.dtype).scatter_reduce(0, index, g_s, "amax")
    return (phi.unsqueeze(1) * (pool_t - pool_s) ** 2).mean()


def _setup(dtype, sizes=(60, 9), k=12, c_t=6, c_s=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    m = sum(sizes)
    x_t = torch.randn(m, c_t, generator=g, dtype=dtype)
    x_s = torch.randn(m, c_s, generator=g, dtype=dtype).requires_grad_(True)
    ptr = [0]
    for n in sizes:
        ptr.append(ptr[-1] + n)
    graph = EdgeGraph(*knn_per_sample(x_t, ptr, k))
    phi = torch.rand(m, generator=g, dtype=dtype) * 2
    torch.manual_seed(seed)
    ad_t, ad_s = EdgeConvAdapter(c_t, c_s).to(dtype), EdgeConvAdapter(c_s, c_s).to(dtype)
    with torch.no_grad():  # non-trivial affine BatchNorm, some negative scales
        for ad in (ad_t, ad_s):
            ad.bn.weight.uniform_(-1.5, 1.5)
            ad.bn.bias.uniform_(-0.5, 0.5)
    return x_t, x_s, graph, ad_t, ad_s, phi


def _grads(loss, x_s, ad_t, ad_s):
    loss.backward()
    out = [x_s.grad.clone()] + [p.grad.clone() for p in list(ad_t.parameters()) + list(ad_s.parameters())]
    x_s.grad = None
    return out


def _rel(a, b):
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


@pytest.mark.parametrize("backend,fused,max_pool_k", [
    ("numba", True, False),  # the CPU default: one fused autograd function
    ("numba", False, False), ("torch", False, False),  # composed: fold + EdgeSqSum + EdgeReluDiffLoss
    ("numba", False, True), ("torch", False, True),  # max-pooled over K
])
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 2e-5)])
def test_fast_loss_and_gradients_match_reference(backend, fused, max_pool_k, dtype, tol):
    # sample 2 has 9 nodes < K = 12: ragged neighbourhoods are exercised too
    x_t, x_s, graph, ad_t, ad_s, phi = _setup(dtype)
    ref_t, ref_s = copy.deepcopy(ad_t), copy.deepcopy(ad_s)
    fast = graph_distill_loss(x_t, x_s, graph, ad_t, ad_s, phi, max_pool_k=max_pool_k, backend=backend, fused=fused)
    g_fast = _grads(fast, x_s, ad_t, ad_s)
    ref = reference_loss(x_t, x_s, graph, ref_t, ref_s, phi, max_pool_k=max_pool_k)
    g_ref = _grads(ref, x_s, ref_t, ref_s)
    assert abs(fast.item() - ref.item()) <= tol * abs(ref.item())
    assert len(g_fast) == 1 + 3 + 3  # student features, (conv, gamma, beta) per adapter
    for a, b in zip(g_fast, g_ref):
        assert b.abs().max() > 0
        assert _rel(a, b) < tol
    for a, b in ((ad_t, ref_t), (ad_s, ref_s)):
        assert _rel(a.bn.running_mean, b.bn.running_mean) < tol
        assert _rel(a.bn.running_var, b.bn.running_var) < tol
        assert int(a.bn.num_batches_tracked) == int(b.bn.num_batches_tracked) == 1


def test_eval_mode_adapters_use_running_statistics():
    x_t, x_s, graph, ad_t, ad_s, phi = _setup(torch.float64)
    with torch.no_grad():
        for ad in (ad_t, ad_s):
            ad.bn.running_mean.uniform_(-1, 1)
            ad.bn.running_var.uniform_(0.5, 2)
    ad_t.eval()
    ad_s.eval()
    fast = graph_distill_loss(x_t, x_s, graph, ad_t, ad_s, phi)
    ref = reference_loss(x_t, x_s, graph, ad_t, ad_s, phi)
    assert abs(fast.item() - ref.item()) < 1e-10 * abs(ref.item())


def test_fast_path_at_realistic_scale_float32():
    # wide, with many edges: float32 accumulation must stay close to a float64 reference
    x_t, x_s, graph, ad_t, ad_s, phi = _setup(torch.float32, sizes=(700,), k=64, c_t=16, c_s=8, seed=3)
    ref_t, ref_s = copy.deepcopy(ad_t).double(), copy.deepcopy(ad_s).double()
    fast = graph_distill_loss(x_t, x_s, graph, ad_t, ad_s, phi)
    g_fast = _grads(fast, x_s, ad_t, ad_s)
    x_s64 = x_s.detach().double().requires_grad_(True)
    ref = reference_loss(x_t.double(), x_s64, graph, ref_t, ref_s, phi.double())
    g_ref = _grads(ref, x_s64, ref_t, ref_s)
    assert abs(fast.item() - ref.item()) < 1e-5 * abs(ref.item())
    for a, b in zip(g_fast, g_ref):
        assert _rel(a.double(), b) < 1e-5


def test_thread_local_scatter_buffers(monkeypatch):
    # more row blocks than threads (and than the default) must still sum to the same gradients
    import pcdet.kd.graph_ops as graph_ops

    x_t, x_s, graph, ad_t, ad_s, phi = _setup(torch.float64)
    ref_t, ref_s = copy.deepcopy(ad_t), copy.deepcopy(ad_s)
    monkeypatch.setattr(graph_ops, "_nthreads", lambda m: 5)
    fast = graph_distill_loss(x_t, x_s, graph, ad_t, ad_s, phi, backend="numba")
    g_fast = _grads(fast, x_s, ad_t, ad_s)
    g_ref = _grads(reference_loss(x_t, x_s, graph, ref_t, ref_s, phi), x_s, ref_t, ref_s)
    for a, b in zip(g_fast, g_ref):
        assert _rel(a, b) < 1e-10
