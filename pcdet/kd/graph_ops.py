"""Fused edge operations for graph distillation: the edge features are never materialised.

Owns :class:`EdgeGraph`, :class:`EdgeConvAdapter` and :func:`graph_distill_loss`, plus the autograd
functions and numba kernels behind them.

A dynamic-graph-convolution adapter is a 1x1 convolution on the edge feature
``concat[x_j, x_i]`` (neighbour j of centre i) followed by BatchNorm and ReLU. The convolution
splits as ``W [x_j; x_i] = W1 x_j + W2 x_i``, so the projections ``a = x W1^T`` and ``c = x W2^T``
are computed once per node (M, C) and every edge is ``y_ij = a_j + c_i``. BatchNorm (training
mode) needs per-channel mean and variance over all E edges:

* mean = (sum_j indeg_j a_j + sum_i K_i c_i) / E (in-degree and out-degree counts, no gathers);
* variance = sum_e (a'_j + c'_i)^2 / E with a', c' centred, accumulated in float64 by one edge
  pass (:class:`EdgeSqSum`); its backward needs ``S_i = sum_{j in N(i)} a'_j`` and
  ``R_j = sum_{i: j in N(i)} c'_i``, both produced by that same pass.

BatchNorm's scale and shift are then folded into the per-node terms (``a~ = gamma rstd a'``,
``c~ = gamma rstd c' + beta``), so the teacher and student graph features are
``G_ij = relu(a~_j + c~_i)`` and the loss ``sum_i phi_i sum_{j,c} (G^T_ij - G^S_ij)^2`` is one
fused edge pass forward and one backward (:class:`EdgeReluDiffLoss`); the backward scatters its
per-edge gradient into (M, C) buffers (one per thread, summed). Nothing of size (E, C) is stored:
memory is O(M C), time is a few passes over E x C elements. Everything else (the projections, the
BatchNorm statistics' own backward) is ordinary autograd on (M, C) tensors.

With ``max_pool_k`` the graph feature is max-pooled over the K neighbours; since ReLU is monotone,
``max_j relu(a~_j + c~_i) = relu(c~_i + max_j a~_j)``: one gather-max (:func:`gather_max`).

On CPU tensors with training-mode adapters the whole tail (BatchNorm statistics, folding, loss and
their backward in closed form) is one autograd function, :class:`FusedEdgeBNReluLoss`: three
threaded numba edge passes forward, one backward, and single-threaded numpy on (M, C) arrays, so
a step opens few parallel regions (they are costly on a busy machine). Otherwise (other devices,
eval-mode adapters, ``backend="torch"``, max-pooling) the loss is composed of :meth:`EdgeConvAdapter.fold`,
:class:`EdgeSqSum` and :class:`EdgeReluDiffLoss`, whose edge passes are numba kernels on the CPU
or chunked torch code elsewhere.
"""
import numba
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from numba import njit, prange

#: rows per chunk in the torch (non-numba) edge passes
TORCH_ROW_CHUNK = 1024


# --------------------------------------------------------------------------------------- kernels
@njit(cache=True, parallel=True)
def _sqsum_kernel(a, c, nbr, kcnt, nthreads, sq_part, s_out, r_buf):
    """sq_part[t, ch] = sum over edges of thread t of (a_j + c_i)^2 (float64);
    s_out[i] = sum_{j in N(i)} a_j; r_buf[t, j] += c_i for every edge (i, j) of thread t."""
    m, ch = a.shape
    for t in prange(nthreads):
        lo = (m * t) // nthreads
        hi = (m * (t + 1)) // nthreads
        acc = np.zeros(ch, dtype=np.float64)
        srow = np.zeros(ch, dtype=np.float64)
        for i in range(lo, hi):
            srow[:] = 0.0
            for k in range(kcnt[i]):
                j = nbr[i, k]
                for q in range(ch):
                    v = a[j, q]
                    ci = c[i, q]
                    y = v + ci
                    acc[q] += y * y
                    srow[q] += v
                    r_buf[t, j, q] += ci
            for q in range(ch):
                s_out[i, q] = srow[q]
        for q in range(ch):
            sq_part[t, q] = acc[q]


@njit(cache=True, parallel=True)
def _relu_diff_fwd_kernel(at, ct, as_, cs, phi, nbr, kcnt, out_rows):
    """out_rows[i] = phi_i * sum_{j in N(i)} sum_c (relu(at_j + ct_i) - relu(as_j + cs_i))^2."""
    m, ch = at.shape
    for i in prange(m):
        acc = 0.0
        for k in range(kcnt[i]):
            j = nbr[i, k]
            part = 0.0
            for q in range(ch):
                ht = at[j, q] + ct[i, q]
                hs = as_[j, q] + cs[i, q]
                d = max(ht, 0.0) - max(hs, 0.0)
                part += d * d
            acc += part
        out_rows[i] = phi[i] * acc


@njit(cache=True, parallel=True)
def _relu_diff_bwd_kernel(at, ct, as_, cs, phi, nbr, kcnt, nthreads, qt, qs, pt_buf, ps_buf):
    """Per edge g_T = phi_i d [h_T > 0], g_S = -phi_i d [h_S > 0] (d = relu(h_T) - relu(h_S));
    q*[i] = sum over the edges of row i, p*_buf[t, j] += g for each edge (i, j) of thread t."""
    m, ch = at.shape
    for t in prange(nthreads):
        lo = (m * t) // nthreads
        hi = (m * (t + 1)) // nthreads
        for i in range(lo, hi):
            w = phi[i]
            for k in range(kcnt[i]):
                j = nbr[i, k]
                for q in range(ch):
                    ht = at[j, q] + ct[i, q]
                    hs = as_[j, q] + cs[i, q]
                    d = (max(ht, 0.0) - max(hs, 0.0)) * w
                    gt = d if ht > 0.0 else 0.0
                    gs = -d if hs > 0.0 else 0.0
                    qt[i, q] += gt
                    qs[i, q] += gs
                    pt_buf[t, j, q] += gt
                    ps_buf[t, j, q] += gs


def _np(t):
    return t.detach().contiguous().numpy()


def _nthreads(m):
    return max(1, min(int(numba.get_num_threads()), int(m)))


# --------------------------------------------------------------------------------------- graph
class EdgeGraph:
    """Directed KNN graph: row ``i`` has neighbours ``nbr[i, :kcnt[i]]`` (global row indices).

    ``nbr`` (M, K_max) int64 padded with -1, ``kcnt`` (M,) int64. Derived: ``indeg`` (M,) how often
    each row is somebody's neighbour, ``num_edges`` E.
    """

    def __init__(self, nbr, kcnt):
        self.nbr = nbr.long().contiguous()
        self.kcnt = kcnt.long().contiguous()
        self.num_rows = int(nbr.shape[0])
        valid = self.valid_mask()
        self.num_edges = int(self.kcnt.sum().item())
        self.indeg = torch.bincount(self.nbr[valid], minlength=self.num_rows)
        self._np_cache = None

    def valid_mask(self):
        ar = torch.arange(self.nbr.shape[1], device=self.nbr.device)
        return ar.unsqueeze(0) < self.kcnt.unsqueeze(1)

    def numpy_arrays(self):
        if self._np_cache is None:
            self._np_cache = (_np(self.nbr.cpu()), _np(self.kcnt.cpu()))
        return self._np_cache

    def filled_nbr(self):
        """``nbr`` with padding replaced by the row's first neighbour (harmless for a max)."""
        return torch.where(self.valid_mask(), self.nbr, self.nbr[:, :1].expand_as(self.nbr))

    def use_numba(self, tensor, backend):
        if backend == "numba":
            if tensor.device.type != "cpu":
                raise ValueError("backend 'numba' needs CPU tensors")
            return True
        if backend == "torch":
            return False
        if backend != "auto":
            raise ValueError(f"unknown edge backend {backend!r}; use auto, numba or torch")
        return tensor.device.type == "cpu" and tensor.dtype in (torch.float32, torch.float64)


def _row_chunks(m):
    for s in range(0, m, TORCH_ROW_CHUNK):
        yield s, min(m, s + TORCH_ROW_CHUNK)


# --------------------------------------------------------------------------------------- autograd
class EdgeSqSum(torch.autograd.Function):
    """V[c] = sum over edges (i, j) of (a_j + c_i)^2 (per channel, float64 accumulation)."""

    @staticmethod
    def forward(ctx, a, c, graph, backend):
        m, ch = a.shape
        if graph.use_numba(a, backend):
            nbr, kcnt = graph.numpy_arrays()
            nt = _nthreads(m)
            sq_part = np.zeros((nt, ch), dtype=np.float64)
            s_out = np.empty((m, ch), dtype=_np(a).dtype)
            r_buf = np.zeros((nt, m, ch), dtype=s_out.dtype)
            _sqsum_kernel(_np(a), _np(c), nbr, kcnt, nt, sq_part, s_out, r_buf)
            v = torch.from_numpy(sq_part.sum(axis=0))
            s = torch.from_numpy(s_out)
            r = torch.from_numpy(r_buf.sum(axis=0))
        else:
            valid = graph.valid_mask()
            v = torch.zeros(ch, dtype=torch.float64, device=a.device)
            s = torch.zeros_like(a)
            r = torch.zeros_like(a)
            for lo, hi in _row_chunks(m):
                vm = valid[lo:hi]
                nb = graph.nbr[lo:hi][vm]
                rows = torch.arange(lo, hi, device=a.device).unsqueeze(1).expand(-1, vm.shape[1])[vm]
                aj = a[nb]
                ci = c[rows]
                y = (aj + ci).double()
                v += (y * y).sum(dim=0)
                s.index_add_(0, rows, aj)
                r.index_add_(0, nb, ci)
        ctx.save_for_backward(a, c, s.to(a.device), r.to(a.device))
        ctx.graph = graph
        return v.to(a.device)

    @staticmethod
    def backward(ctx, grad_v):
        a, c, s, r = ctx.saved_tensors
        graph = ctx.graph
        gv = (2.0 * grad_v).to(a.dtype)
        grad_a = gv * (graph.indeg.to(a.dtype).unsqueeze(1) * a + r)
        grad_c = gv * (graph.kcnt.to(a.dtype).unsqueeze(1) * c + s)
        return grad_a, grad_c, None, None


class EdgeReluDiffLoss(torch.autograd.Function):
    """sum_i phi_i sum_{j in N(i)} sum_c (relu(aT_j + cT_i) - relu(aS_j + cS_i))^2 (a scalar)."""

    @staticmethod
    def forward(ctx, at, ct, as_, cs, phi, graph, backend):
        m = at.shape[0]
        phi = phi.to(at.dtype)
        numba_path = graph.use_numba(at, backend)
        if numba_path:
            nbr, kcnt = graph.numpy_arrays()
            out_rows = np.empty(m, dtype=np.float64)
            _relu_diff_fwd_kernel(_np(at), _np(ct), _np(as_), _np(cs), _np(phi), nbr, kcnt, out_rows)
            total = torch.tensor(out_rows.sum(), dtype=at.dtype)
        else:
            valid = graph.valid_mask()
            total = torch.zeros((), dtype=torch.float64, device=at.device)
            for lo, hi in _row_chunks(m):
                d = _edge_diff_chunk(at, ct, as_, cs, graph.nbr[lo:hi], lo, hi)[0]
                d = d * valid[lo:hi].unsqueeze(2).to(d.dtype)
                total += ((d * d).sum(dim=(1, 2)).double() * phi[lo:hi].double()).sum()
            total = total.to(at.dtype)
        ctx.save_for_backward(at, ct, as_, cs, phi)
        ctx.graph, ctx.numba_path = graph, numba_path
        return total.to(at.device)

    @staticmethod
    def backward(ctx, grad_out):
        at, ct, as_, cs, phi = ctx.saved_tensors
        graph = ctx.graph
        m, ch = at.shape
        if ctx.numba_path:
            nbr, kcnt = graph.numpy_arrays()
            nt = _nthreads(m)
            dt = _np(at).dtype
            qt = np.zeros((m, ch), dtype=dt)
            qs = np.zeros((m, ch), dtype=dt)
            pt_buf = np.zeros((nt, m, ch), dtype=dt)
            ps_buf = np.zeros((nt, m, ch), dtype=dt)
            _relu_diff_bwd_kernel(_np(at), _np(ct), _np(as_), _np(cs), _np(phi), nbr, kcnt, nt, qt, qs, pt_buf, ps_buf)
            qt, qs = torch.from_numpy(qt), torch.from_numpy(qs)
            pt, ps = torch.from_numpy(pt_buf.sum(axis=0)), torch.from_numpy(ps_buf.sum(axis=0))
        else:
            valid = graph.valid_mask()
            qt, qs, pt, ps = (torch.zeros_like(at) for _ in range(4))
            for lo, hi in _row_chunks(m):
                nb = graph.nbr[lo:hi]
                d, ht, hs = _edge_diff_chunk(at, ct, as_, cs, nb, lo, hi)
                d = d * (valid[lo:hi].unsqueeze(2).to(d.dtype) * phi[lo:hi].view(-1, 1, 1))
                gt = d * (ht > 0).to(d.dtype)
                gs = -d * (hs > 0).to(d.dtype)
                qt[lo:hi] = gt.sum(dim=1)
                qs[lo:hi] = gs.sum(dim=1)
                vm = valid[lo:hi]
                pt.index_add_(0, nb[vm], gt[vm])
                ps.index_add_(0, nb[vm], gs[vm])
        scale = (2.0 * grad_out).to(at.dtype).to(at.device)
        return (pt.to(at.device) * scale, qt.to(at.device) * scale, ps.to(at.device) * scale,
                qs.to(at.device) * scale, None, None, None)


class FusedEdgeBNReluLoss(torch.autograd.Function):
    """CPU path of the whole tail, BatchNorm statistics included, in few parallel regions.

    Inputs: per side the projections ``a`` (neighbour half) and ``c`` (centre half), (M, C), and
    the BatchNorm affine parameters; output: sum_i phi_i sum_{j,c} (G^T - G^S)^2. Forward: per side
    centring (numpy, single thread), one edge pass for the variance and the S/R sums (numba), the
    folded affine, one edge pass for the loss. Backward: one edge pass for the per-edge gradient
    sums P (by neighbour) and Q (by centre), then the BatchNorm backward in closed form on (M, C)
    arrays:  with g_e the gradient at h_e, dbeta = sum_e g_e, dgamma = rstd (sum_j P_j a'_j +
    sum_i Q_i c'_i), dL/dy_e = gamma rstd (g_e - dbeta/E - yhat_e dgamma/E), summed over the edges
    of each neighbour j (-> a_j) and of each centre i (-> c_i). ``stats`` (a dict) receives the
    batch mean and biased variance of both sides for the running statistics.
    """

    @staticmethod
    def forward(ctx, a_t, c_t, a_s, c_s, gamma_t, beta_t, gamma_s, beta_s, phi, graph, eps, stats):
        nbr, kcnt = graph.numpy_arrays()
        e = float(graph.num_edges)
        m, ch = a_t.shape
        nt = _nthreads(m)
        dt = _np(a_t).dtype
        indeg = graph.indeg.numpy().astype(dt)[:, None]
        outdeg = kcnt.astype(dt)[:, None]
        sides = []
        for a, c, gamma, beta, side_eps in ((a_t, c_t, gamma_t, beta_t, eps[0]), (a_s, c_s, gamma_s, beta_s, eps[1])):
            a, c = _np(a), _np(c)
            mean_a = (a * indeg).sum(axis=0, dtype=np.float64) / e
            mean_c = (c * outdeg).sum(axis=0, dtype=np.float64) / e
            a0 = (a - mean_a.astype(dt)).astype(dt, copy=False)
            c0 = (c - mean_c.astype(dt)).astype(dt, copy=False)
            sq_part = np.zeros((nt, ch), dtype=np.float64)
            s_sum = np.empty((m, ch), dtype=dt)
            r_buf = np.zeros((nt, m, ch), dtype=dt)
            _sqsum_kernel(a0, c0, nbr, kcnt, nt, sq_part, s_sum, r_buf)
            var = sq_part.sum(axis=0) / e
            rstd = (1.0 / np.sqrt(var + side_eps)).astype(dt)
            g = _np(gamma).astype(dt)
            scale = g * rstd
            folded_a = a0 * scale
            folded_c = c0 * scale + _np(beta).astype(dt)
            sides.append({"a0": a0, "c0": c0, "S": s_sum, "R": r_buf.sum(axis=0), "rstd": rstd, "gamma": g,
                          "fa": folded_a, "fc": folded_c})
            stats.setdefault("mean", []).append(torch.from_numpy(mean_a + mean_c))
            stats.setdefault("var", []).append(torch.from_numpy(var))
        phi_np = _np(phi.to(a_t.dtype))
        out_rows = np.empty(m, dtype=np.float64)
        t, s_ = sides
        _relu_diff_fwd_kernel(t["fa"], t["fc"], s_["fa"], s_["fc"], phi_np, nbr, kcnt, out_rows)
        ctx.sides, ctx.phi, ctx.graph, ctx.degrees = sides, phi_np, graph, (indeg, outdeg)
        return torch.tensor(out_rows.sum(), dtype=a_t.dtype)

    @staticmethod
    def backward(ctx, grad_out):
        t, s_ = ctx.sides
        graph = ctx.graph
        nbr, kcnt = graph.numpy_arrays()
        indeg, outdeg = ctx.degrees
        e = float(graph.num_edges)
        m, ch = t["fa"].shape
        nt = _nthreads(m)
        dt = t["fa"].dtype
        q_t, q_s = np.zeros((m, ch), dtype=dt), np.zeros((m, ch), dtype=dt)
        p_t_buf, p_s_buf = np.zeros((nt, m, ch), dtype=dt), np.zeros((nt, m, ch), dtype=dt)
        _relu_diff_bwd_kernel(t["fa"], t["fc"], s_["fa"], s_["fc"], ctx.phi, nbr, kcnt, nt, q_t, q_s, p_t_buf, p_s_buf)
        f = 2.0 * float(grad_out)
        grads = []
        for side, p_sum, q_sum in ((t, p_t_buf.sum(axis=0), q_t), (s_, p_s_buf.sum(axis=0), q_s)):
            rstd, gamma = side["rstd"].astype(np.float64), side["gamma"].astype(np.float64)
            dbeta = f * q_sum.sum(axis=0, dtype=np.float64)
            dgamma = f * rstd * ((p_sum * side["a0"]).sum(axis=0, dtype=np.float64)
                                 + (q_sum * side["c0"]).sum(axis=0, dtype=np.float64))
            common = (gamma * rstd).astype(dt)
            mean_g = (dbeta / e).astype(dt)
            mean_gy = (rstd * dgamma / e).astype(dt)
            grad_a = common * (f * p_sum - indeg * mean_g - (indeg * side["a0"] + side["R"]) * mean_gy)
            grad_c = common * (f * q_sum - outdeg * mean_g - (outdeg * side["c0"] + side["S"]) * mean_gy)
            grads.append((torch.from_numpy(grad_a.astype(dt, copy=False)), torch.from_numpy(grad_c.astype(dt, copy=False)),
                          torch.from_numpy(dgamma.astype(dt)), torch.from_numpy(dbeta.astype(dt))))
        (ga_t, gc_t, gg_t, gb_t), (ga_s, gc_s, gg_s, gb_s) = grads
        return ga_t, gc_t, ga_s, gc_s, gg_t, gb_t, gg_s, gb_s, None, None, None, None


def _fused_cpu_loss(x_t, x_s, graph, adapter_t, adapter_s, phi):
    """Sum of phi (G^T - G^S)^2 over edges x channels via :class:`FusedEdgeBNReluLoss` (updates BN running stats)."""
    a_t, c_t = adapter_t.project(x_t)
    a_s, c_s = adapter_s.project(x_s)
    params = []
    for bn, ch in ((adapter_t.bn, a_t.shape[1]), (adapter_s.bn, a_s.shape[1])):
        if bn.affine:
            params += [bn.weight, bn.bias]
        else:
            params += [a_t.new_ones(ch), a_t.new_zeros(ch)]
    stats = {}
    total = FusedEdgeBNReluLoss.apply(a_t, c_t, a_s, c_s, *params, phi.detach(), graph,
                                      (adapter_t.bn.eps, adapter_s.bn.eps), stats)
    e = graph.num_edges
    with torch.no_grad():
        for bn, mean, var in zip((adapter_t.bn, adapter_s.bn), stats["mean"], stats["var"]):
            if bn.track_running_stats:
                bn.num_batches_tracked += 1
                mom = bn.momentum if bn.momentum is not None else 1.0 / float(bn.num_batches_tracked)
                bn.running_mean.mul_(1 - mom).add_(mom * mean.to(bn.running_mean.dtype))
                bn.running_var.mul_(1 - mom).add_(mom * (var * (e / max(e - 1, 1))).to(bn.running_var.dtype))
    return total


def _edge_diff_chunk(at, ct, as_, cs, nb, lo, hi):
    nb = nb.clamp_min(0)
    ht = at[nb] + ct[lo:hi].unsqueeze(1)
    hs = as_[nb] + cs[lo:hi].unsqueeze(1)
    return F.relu(ht) - F.relu(hs), ht, hs


def gather_max(a, graph):
    """(M, C): per row and channel, the max of ``a`` over the row's neighbours (autograd: to the argmax)."""
    nb = graph.filled_nbr()
    out = []
    for lo, hi in _row_chunks(a.shape[0]):
        out.append(a[nb[lo:hi]].max(dim=1)[0])
    return torch.cat(out, dim=0) if out else a.new_zeros(a.shape)


# --------------------------------------------------------------------------------------- modules
class EdgeConvAdapter(nn.Module):
    """1x1 conv (no bias; BatchNorm follows) + BatchNorm + ReLU on edge features concat[x_j, x_i].

    ``forward`` is the materialised version on a (B, 2 C_in, L) edge tensor; the distillation loss
    uses :meth:`fold` (per-node terms with BatchNorm folded in, statistics over the graph's edges).
    """

    def __init__(self, c_in, c_out, affine=True):
        super().__init__()
        self.c_in, self.c_out = int(c_in), int(c_out)
        self.conv = nn.Conv1d(2 * self.c_in, self.c_out, kernel_size=1, bias=False)
        self.bn = nn.BatchNorm1d(self.c_out, affine=affine)

    def forward(self, edges):
        return F.relu(self.bn(self.conv(edges)))

    def project(self, x):
        """x (M, C_in) -> (a, c), both (M, C_out): the neighbour and centre halves of the conv."""
        w = self.conv.weight[:, :, 0]
        both = x @ torch.cat([w[:, : self.c_in], w[:, self.c_in :]], dim=0).t()  # one product for both halves
        return both[:, : self.c_out], both[:, self.c_out :]

    def fold(self, x, graph, backend="auto"):
        """(a~, c~) with relu(a~_j + c~_i) equal to this adapter's output on edge (i, j)."""
        a, c = self.project(x)
        bn = self.bn
        e = graph.num_edges
        if bn.training or not bn.track_running_stats:
            mean_a = graph.indeg.to(a.dtype) @ a / e
            mean_c = graph.kcnt.to(c.dtype) @ c / e
            a0, c0 = a - mean_a, c - mean_c
            var = (EdgeSqSum.apply(a0, c0, graph, backend) / e).to(a.dtype)
            if bn.training and bn.track_running_stats:
                with torch.no_grad():
                    bn.num_batches_tracked += 1
                    mom = bn.momentum if bn.momentum is not None else 1.0 / float(bn.num_batches_tracked)
                    unbiased = var * (e / max(e - 1, 1))
                    bn.running_mean.mul_(1 - mom).add_(mom * (mean_a + mean_c).detach())
                    bn.running_var.mul_(1 - mom).add_(mom * unbiased.detach())
        else:
            a0, c0 = a, c - bn.running_mean
            var = bn.running_var
        scale = torch.rsqrt(var + bn.eps)
        shift = torch.zeros_like(scale)
        if bn.affine:
            scale = scale * bn.weight
            shift = bn.bias
        return a0 * scale, c0 * scale + shift


def graph_distill_loss(x_t, x_s, graph, adapter_t, adapter_s, phi, max_pool_k=False, backend="auto", fused=None):
    """mean over all graph-feature entries of phi_i (G^T - G^S)^2 (edges x channels, or nodes x
    channels with ``max_pool_k``); G = adapter output on concat[x_j, x_i] over ``graph``.

    ``fused`` (default: whenever possible) uses :class:`FusedEdgeBNReluLoss` on CPU tensors with
    training-mode adapters; otherwise the loss is composed of :meth:`EdgeConvAdapter.fold`,
    :class:`EdgeSqSum` and :class:`EdgeReluDiffLoss` (any device, ``backend`` numba or torch).
    """
    if graph.num_edges == 0:
        return (x_s.sum() + sum(p.sum() for p in adapter_s.parameters())) * 0.0
    can_fuse = (not max_pool_k and adapter_t.bn.training and adapter_s.bn.training and graph.use_numba(x_s, backend)
                and x_t.dtype == x_s.dtype)
    if fused and not can_fuse:
        raise ValueError("the fused graph loss needs CPU tensors of one dtype, training-mode adapters, no max-pool")
    if can_fuse and fused is not False:
        return _fused_cpu_loss(x_t, x_s, graph, adapter_t, adapter_s, phi) / (graph.num_edges * adapter_s.c_out)
    at, ct = adapter_t.fold(x_t, graph, backend)
    as_, cs = adapter_s.fold(x_s, graph, backend)
    ch = at.shape[1]
    if max_pool_k:
        gt = F.relu(gather_max(at, graph) + ct)
        gs = F.relu(gather_max(as_, graph) + cs)
        return (phi.to(gt.dtype).unsqueeze(1) * (gt - gs) ** 2).sum() / (gt.shape[0] * ch)
    return EdgeReluDiffLoss.apply(at, ct, as_, cs, phi, graph, backend) / (graph.num_edges * ch)
