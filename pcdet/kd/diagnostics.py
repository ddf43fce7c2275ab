"""Diagnostics of distillation: is the KD signal alive, and what does it weigh?

Owns :func:`linear_cka`, :func:`bn_affine_stats`, :func:`edge_graph_features`,
:func:`pointdistiller_diagnostics` and :func:`gradient_ratio`. None of them changes the training: they
read detached tensors, use their own random generator and never update BatchNorm statistics.

What is measured (the ``kd_diagnostics`` training hook sets how often; values go to tensorboard
under ``train/<method tag>/diag/<name>`` and to ``train_stats.json`` under ``kd_diagnostics``):

* ``{t,s}_bn_gamma_mean|min``, ``{t,s}_bn_beta_mean|min``: the graph-conv adapters' BatchNorm scale
  and shift (teacher side ``t``, student side ``s``); gamma -> 0 and beta < 0 is the collapse to a
  constant / dead-ReLU output at which the loss is zero and nothing transfers;
* ``{t,s}_active``: the fraction of graph-feature entries G > 0 on each side;
* ``cka``: linear CKA (Kornblith et al. 2019) between G_T and G_S over a fixed-size sample of edges;
* ``phi_<class>`` / ``phi_background``: the share of the reweighting mass phi on nodes inside a
  ground-truth box of each class (a BEV test of the node's cell centre) and outside every box;
  ``ess``: the mean over samples of the effective sample size (sum phi)^2 / sum phi^2, and
  ``nodes``: the mean number of nodes per sample;
* ``grad_ratio`` (by the wrapper, per method with a ``FEATURE``): ||dL_kd / dF|| / ||dL_task / dF||
  at the distilled student feature F.
"""
import numpy as np
import torch

MAX_EDGES = 4096


def linear_cka(x, y):
    """Linear CKA of two (n, c) representations of the same n items (1: identical up to rotation and
    scale; 0: orthogonal): ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F) on column-centred x, y."""
    x = x.double() - x.double().mean(0, keepdim=True)
    y = y.double() - y.double().mean(0, keepdim=True)
    num = (y.t() @ x).pow(2).sum()
    den = torch.sqrt((x.t() @ x).pow(2).sum() * (y.t() @ y).pow(2).sum())
    return float(num / den) if float(den) > 0 else 0.0


def bn_affine_stats(prefix, bn):
    """Mean and min of a BatchNorm's scale and shift (``{}`` for a BatchNorm without affine parameters)."""
    if not bn.affine:
        return {}
    g, b = bn.weight.detach().float(), bn.bias.detach().float()
    return {f"{prefix}_bn_gamma_mean": float(g.mean()), f"{prefix}_bn_gamma_min": float(g.min()),
            f"{prefix}_bn_beta_mean": float(b.mean()), f"{prefix}_bn_beta_min": float(b.min())}


def _edge_stats(a, c, graph):
    """BatchNorm batch statistics (mean, biased variance) of h = a_j + c_i over every edge of ``graph``."""
    from pcdet.kd.graph_ops import EdgeSqSum

    e = graph.num_edges
    mean = (graph.indeg.to(a.dtype) @ a + graph.kcnt.to(c.dtype) @ c) / e
    var = EdgeSqSum.apply(a - (graph.indeg.to(a.dtype) @ a) / e, c - (graph.kcnt.to(c.dtype) @ c) / e, graph,
                          "auto") / e
    return mean, var.to(a.dtype)


def edge_graph_features(adapter, x, graph, edges):
    """G = relu(BN(W [x_j; x_i])) on the chosen ``edges`` (rows, neighbour index), with the BatchNorm's
    training-mode statistics over all edges, as the loss sees them; nothing is updated."""
    with torch.no_grad():
        a, c = adapter.project(x.detach().float())
        mean, var = _edge_stats(a, c, graph)
        rows, cols = edges
        h = a[graph.nbr[rows, cols]] + c[rows]
        bn = adapter.bn
        z = (h - mean) * torch.rsqrt(var + bn.eps)
        if bn.affine:
            z = z * bn.weight.float() + bn.bias.float()
        return torch.relu(z)


def _sample_edges(graph, max_edges, seed=0):
    valid = graph.valid_mask()
    rows, cols = torch.nonzero(valid, as_tuple=True)
    if rows.numel() > max_edges:
        pick = torch.randperm(rows.numel(), generator=torch.Generator().manual_seed(seed))[:max_edges]
        rows, cols = rows[pick], cols[pick]
    return rows, cols


def _node_classes(method, batch_dict, nodes):
    """Per selected node: the 1-based class of the ground-truth box holding its cell centre (0: none)."""
    from pcdet.kd.methods.common import valid_gt
    from pcdet.ops.points_in_boxes import points_in_boxes_index

    geom = getattr(method, "grid_geometry", None)
    if geom is None or "gt_boxes" not in batch_dict or nodes.coords.shape[1] < 2:
        return None
    pcr, vs = geom
    yx = nodes.coords[:, -2:].detach().cpu().double().numpy()  # (y, x) grid indices
    xyz = np.stack([pcr[0] + (yx[:, 1] + 0.5) * vs[0], pcr[1] + (yx[:, 0] + 0.5) * vs[1], np.zeros(len(yx))], 1)
    out = np.zeros(len(yx), dtype=np.int64)
    for b in range(len(nodes.ptr) - 1):
        lo, hi = nodes.ptr[b], nodes.ptr[b + 1]
        g = valid_gt(batch_dict["gt_boxes"][b].detach()).float().cpu().numpy()
        if hi <= lo or len(g) == 0:
            continue
        boxes = g[:, :7].astype(np.float32).copy()
        boxes[:, 2], boxes[:, 5] = 0.0, 1e4  # a BEV test: every height is inside
        idx = points_in_boxes_index(xyz[lo:hi].astype(np.float32), boxes)
        out[lo:hi] = np.where(idx >= 0, g[np.maximum(idx, 0), -1].astype(np.int64), 0)
    return out


def pointdistiller_diagnostics(method, batch_dict, nodes, graph, phi):
    """The diagnostics of one PointDistiller step (see the module docstring)."""
    out = {}
    out.update(bn_affine_stats("t", method.adapter_t.bn))
    out.update(bn_affine_stats("s", method.adapter_s.bn))
    edges = _sample_edges(graph, MAX_EDGES)
    g_t = edge_graph_features(method.adapter_t, nodes.feat_t, graph, edges)
    g_s = edge_graph_features(method.adapter_s, nodes.feat_s, graph, edges)
    out["t_active"], out["s_active"] = float((g_t > 0).float().mean()), float((g_s > 0).float().mean())
    out["cka"] = linear_cka(g_t, g_s)
    w = phi.detach().double().cpu()
    ess = []
    for b in range(len(nodes.ptr) - 1):
        seg = w[nodes.ptr[b]:nodes.ptr[b + 1]]
        if seg.numel():
            ess.append(float(seg.sum() ** 2 / seg.pow(2).sum().clamp_min(1e-300)))
    out["ess"] = float(np.mean(ess)) if ess else 0.0
    out["nodes"] = float(nodes.num_nodes / max(1, len(nodes.ptr) - 1))
    classes = _node_classes(method, batch_dict, nodes)
    if classes is not None and float(w.sum()) > 0:
        total = float(w.sum())
        names = list(getattr(method, "class_names", []))
        for k, name in enumerate(names, start=1):
            out[f"phi_{name}"] = float(w[torch.from_numpy(classes == k)].sum()) / total
        out["phi_background"] = float(w[torch.from_numpy(classes == 0)].sum()) / total
    return out


def gradient_ratio(kd_loss, task_loss, feature):
    """||dL_kd/dF|| / ||dL_task/dF|| at ``feature`` (None when F has no gradient path); no ``.grad`` is touched."""
    if not (torch.is_tensor(feature) and feature.requires_grad and kd_loss.requires_grad):
        return None
    g_kd = torch.autograd.grad(kd_loss, feature, retain_graph=True, allow_unused=True)[0]
    g_task = torch.autograd.grad(task_loss, feature, retain_graph=True, allow_unused=True)[0]
    if g_kd is None or g_task is None:
        return None
    n_task = float(g_task.float().norm())
    return float(g_kd.float().norm()) / n_task if n_task > 0 else float("inf")
