"""Exact k-nearest-neighbour search for distillation graphs, chunked so memory stays bounded.

Owns :func:`knn`, :func:`knn_self` and :func:`knn_per_sample` and their numba selection kernel.

Squared Euclidean distances are computed per chunk of query rows as
``||q||^2 + ||r||^2 - 2 q r^T`` (one matrix product per chunk); the ``k`` smallest of each row are
then selected inside the chunk, so no (queries x references) matrix larger than one chunk ever
exists (``max_chunk_elems`` floats). On the CPU a numba kernel selects per row (threads over rows:
a sampled threshold, then quickselect among the few entries below it, with a bounded max-heap as
the exact fallback); on other devices ``torch.topk`` does. The result is exact up to the
floating-point rounding of the distance formula; neighbours come in no particular order.

:func:`knn_self` searches a set within itself and always returns each node as its own neighbour
(the node itself is part of its local graph, whatever the rounding of its zero self-distance).
:func:`knn_per_sample` runs it separately for each sample of a batch (contiguous row segments),
so a neighbour never comes from another scene.
"""
import numba
import numpy as np
import torch
from numba import njit, prange

#: default bound on the number of distance entries held at once (64 MiB of float32); few large
#: chunks mean few parallel regions, which matters on a busy machine
DEFAULT_MAX_CHUNK_ELEMS = 1 << 24


@njit(cache=True, nogil=True)
def _heap_select_row(row, k, out_idx, out_d):
    """Indices of the ``k`` smallest entries of ``row`` (ties: the lower index wins), heap order."""
    # max-heap on (distance, index): the root is the current k-th best
    for t in range(k):
        v = row[t]
        pos = t
        while pos > 0:
            par = (pos - 1) >> 1
            if out_d[par] < v or (out_d[par] == v and out_idx[par] < t):
                out_d[pos] = out_d[par]
                out_idx[pos] = out_idx[par]
                pos = par
            else:
                break
        out_d[pos] = v
        out_idx[pos] = t
    n = row.shape[0]
    for j in range(k, n):
        v = row[j]
        if v < out_d[0]:
            pos = 0
            while True:
                c = 2 * pos + 1
                if c >= k:
                    break
                if c + 1 < k and (out_d[c + 1] > out_d[c] or (out_d[c + 1] == out_d[c] and out_idx[c + 1] > out_idx[c])):
                    c += 1
                if out_d[c] > v:
                    out_d[pos] = out_d[c]
                    out_idx[pos] = out_idx[c]
                    pos = c
                else:
                    break
            out_d[pos] = v
            out_idx[pos] = j


@njit(cache=True, nogil=True)
def _kth_smallest(a, cnt, kk):
    """Value of the ``kk``-th smallest (0-based) of ``a[:cnt]`` (quickselect; reorders ``a``)."""
    lo, hi = 0, cnt - 1
    while hi > lo:
        mid = (lo + hi) >> 1
        x, y, z = a[lo], a[mid], a[hi]  # median of three
        if x > y:
            x, y = y, x
        if y > z:
            y = z
        if x > y:
            y = x
        pivot = y
        i, j = lo, hi
        while i <= j:
            while a[i] < pivot:
                i += 1
            while a[j] > pivot:
                j -= 1
            if i <= j:
                tmp = a[i]
                a[i] = a[j]
                a[j] = tmp
                i += 1
                j -= 1
        if kk <= j:
            hi = j
        elif kk >= i:
            lo = i
        else:
            return a[kk]
    return a[kk]


@njit(cache=True, parallel=True)
def _select_k_smallest(dist, k, out_idx, out_d, nthreads):
    """Per row the ``k`` smallest entries (ties: lower index), any order.

    Each row first gets a threshold from a strided sample (every 32nd entry, the quantile that
    should leave about 2k candidates), keeps the entries at or below it, and picks the k smallest
    of those by quickselect; when that leaves fewer than k (or too many) candidates the row falls
    back to a bounded heap over all entries. Both give exactly the same set.
    """
    rows, n = dist.shape
    stride = 32
    m = n // stride
    q = min(m, (2 * k) // stride + 1)
    cap = 8 * k
    for t in prange(nthreads):
        lo = (rows * t) // nthreads
        hi = (rows * (t + 1)) // nthreads
        sample = np.empty(max(m, 1), dtype=dist.dtype)
        cvals = np.empty(cap, dtype=dist.dtype)
        cidx = np.empty(cap, dtype=np.int64)
        work = np.empty(cap, dtype=dist.dtype)
        for r in range(lo, hi):
            row = dist[r]
            done = False
            if n >= 4 * k and m >= 2 * q:
                for s in range(m):
                    sample[s] = row[s * stride]
                thr = _kth_smallest(sample, m, q - 1)
                cnt = 0
                for j in range(n):
                    v = row[j]
                    if v <= thr:
                        if cnt < cap:
                            cvals[cnt] = v
                            cidx[cnt] = j
                        cnt += 1
                if k <= cnt <= cap:
                    for u in range(cnt):
                        work[u] = cvals[u]
                    kth = _kth_smallest(work, cnt, k - 1)
                    o = 0
                    for u in range(cnt):
                        if cvals[u] < kth:
                            out_idx[r, o] = cidx[u]
                            out_d[r, o] = cvals[u]
                            o += 1
                    for u in range(cnt):
                        if o >= k:
                            break
                        if cvals[u] == kth:
                            out_idx[r, o] = cidx[u]
                            out_d[r, o] = cvals[u]
                            o += 1
                    done = True
            if not done:
                _heap_select_row(row, k, out_idx[r], out_d[r])


def _chunk_rows(num_ref, max_chunk_elems):
    return max(1, int(max_chunk_elems) // max(int(num_ref), 1))


def _select(dist, k, selector="auto"):
    """(R, M) distances -> (R, k) indices and distances of the k smallest per row.

    ``selector``: ``numba`` (the CPU selection kernel), ``torch`` (``torch.topk``) or ``auto`` (numba on CPU).
    """
    if selector not in ("auto", "numba", "torch"):
        raise ValueError(f"knn selector {selector!r}: use auto, numba or torch")
    use_numba = selector == "numba" or (
        selector == "auto" and dist.device.type == "cpu" and dist.dtype in (torch.float32, torch.float64))
    if use_numba:
        d = dist.contiguous().numpy()
        idx = np.empty((d.shape[0], k), dtype=np.int64)
        val = np.empty((d.shape[0], k), dtype=d.dtype)
        _select_k_smallest(d, k, idx, val, max(1, min(int(numba.get_num_threads()), d.shape[0])))
        return torch.from_numpy(idx), torch.from_numpy(val)
    val, idx = torch.topk(dist, k, dim=1, largest=False, sorted=False)
    return idx, val


@torch.no_grad()
def knn(query, ref, k, max_chunk_elems=DEFAULT_MAX_CHUNK_ELEMS, selector="auto", _self_offset=None):
    """``k`` nearest rows of ``ref`` (M, C) for each row of ``query`` (Q, C), squared L2.

    Returns ``(idx, dist)``, both (Q, k): indices into ``ref`` (int64) and squared distances.
    Requires ``1 <= k <= M``. ``_self_offset`` (internal, used by :func:`knn_self`): query row ``i``
    is reference row ``i + offset`` and must be chosen.
    """
    query, ref = query.detach(), ref.detach()
    if query.dim() != 2 or ref.dim() != 2 or query.shape[1] != ref.shape[1]:
        raise ValueError(f"knn: query {tuple(query.shape)} and ref {tuple(ref.shape)} must be (Q, C) and (M, C)")
    num_q, num_r = query.shape[0], ref.shape[0]
    k = int(k)
    if not 1 <= k <= num_r:
        raise ValueError(f"knn: k={k} must be between 1 and the number of reference rows ({num_r})")
    if not query.is_floating_point():
        query, ref = query.float(), ref.float()
    ref_sq = (ref * ref).sum(dim=1)
    q_sq = (query * query).sum(dim=1)
    rows = _chunk_rows(num_r, max_chunk_elems)
    idx_out = torch.empty((num_q, k), dtype=torch.long, device=query.device)
    dist_out = torch.empty((num_q, k), dtype=query.dtype, device=query.device)
    ref_t = ref.t()
    buf = torch.empty((min(rows, num_q), num_r), dtype=query.dtype, device=query.device)  # reused per chunk
    for s in range(0, num_q, rows):
        e = min(num_q, s + rows)
        # ||r||^2 - 2 q.r (the row constant ||q||^2 does not change the ranking; added back below)
        d = torch.addmm(ref_sq.unsqueeze(0), query[s:e], ref_t, beta=1.0, alpha=-2.0, out=buf[: e - s])
        if _self_offset is not None:
            ar = torch.arange(s, e, device=d.device)
            d[ar - s, ar + _self_offset] = -float("inf")
        idx, val = _select(d, k, selector)
        idx, val = idx.to(query.device), val.to(query.device)
        idx_out[s:e] = idx
        dist_out[s:e] = (val + q_sq[s:e].unsqueeze(1)).clamp_min(0.0)
        del d
    return idx_out, dist_out


def knn_self(x, k, max_chunk_elems=DEFAULT_MAX_CHUNK_ELEMS, selector="auto"):
    """``k`` nearest rows of ``x`` (N, C) within ``x``; each row is always its own neighbour."""
    return knn(x, x, k, max_chunk_elems=max_chunk_elems, selector=selector, _self_offset=0)


@torch.no_grad()
def knn_per_sample(x, ptr, k, max_chunk_elems=DEFAULT_MAX_CHUNK_ELEMS, selector="auto"):
    """Graph of ``x`` (M, C) whose samples are the row segments ``ptr[b]:ptr[b+1]``.

    Each row gets ``min(k, n_b)`` neighbours from its own segment (itself included).
    Returns ``(nbr, kcnt)``: ``nbr`` (M, k_max) int64 global row indices, padded with -1 where a
    sample has fewer than ``k`` rows, and ``kcnt`` (M,) int64 valid neighbours per row.
    """
    ptr = [int(p) for p in ptr]
    total = ptr[-1]
    sizes = [ptr[b + 1] - ptr[b] for b in range(len(ptr) - 1)]
    k_max = min(int(k), max(sizes) if sizes else 0)
    nbr = torch.full((total, max(k_max, 1)), -1, dtype=torch.long, device=x.device)
    kcnt = torch.zeros(total, dtype=torch.long, device=x.device)
    for b, n in enumerate(sizes):
        if n == 0:
            continue
        s = ptr[b]
        kb = min(int(k), n)
        idx, _ = knn_self(x[s : s + n], kb, max_chunk_elems=max_chunk_elems, selector=selector)
        nbr[s : s + n, :kb] = idx + s
        kcnt[s : s + n] = kb
    return nbr[:, : max(k_max, 1)], kcnt

