"""PointDistiller: reweighted local distillation on a KNN graph of the teacher's most important nodes.

Method (Zhang et al., "PointDistiller", CVPR 2023), per sample of the batch:

1. importance of each node of ``FEATURE``: points per pillar/voxel (teacher side) for voxel
   features, channel-wise max of the teacher feature for BEV maps and point features;
2. the top ``N`` nodes of that sample (all of them when it has fewer); nodes never mix samples;
3. local distillation (``LOCAL_DISTILLATION: true``): each node's ``K`` nearest neighbours among
   the sample's selected nodes (itself included) in the teacher's feature space (or by position,
   ``KNN_SPACE: coordinate``); edge features concat[x_j, x_i]; a dynamic-graph-convolution
   adapter (1x1 conv + BN + ReLU) per side: teacher 2 C_T -> C_A, student 2 C_S -> C_A, where
   ``ADAPTER_CHANNELS`` C_A defaults to the student's C_S (the release's PointPillars adapters; its SECOND
   adapters use 32 at every compression ratio);
   ``MAX_POOL_K`` max-pools the graph features over the K neighbours;
   without local distillation: a 1x1 adapter C_S -> C_T on the student node feature;
4. reweighting (``REWEIGHT: true``): phi = N softmax(importance / TAU) over the sample's nodes
   (phi = 1 otherwise); loss = WEIGHT * mean(phi (G_T - G_S)^2).

Options beyond the paper (each a labelled choice; the defaults are the published method):

* ``LD_LOSS``: ``mean_square`` (default, the paper's 2 * mean(phi dG^2) with ``WEIGHT`` 2) or
  ``l2_norm``, the form the authors' release uses for local distillation without reweighting:
  WEIGHT * ||G_T - G_S||_2 over all graph-feature entries (release weight 5e-4; its gradient does not
  fade as dG -> 0, and its scale grows with sqrt(N K C)); only with ``REWEIGHT: false``.
* ``TEACHER_ADAPTER``: ``trainable`` (default, published: the teacher-side graph conv is trained with
  the student) or ``frozen_random``: frozen at its random initialisation, with BatchNorm without
  affine parameters, so the teacher's graph features keep unit variance per channel and the loss
  cannot reach zero by collapsing both sides to a constant (a deviation from the paper that tests
  the collapse the trainable pair allows).

Diagnostics (every ``diagnostics_every`` steps, set by the ``kd_diagnostics`` training hook;
:mod:`pcdet.kd.diagnostics`): the adapters' BatchNorm scale and shift, the active-ReLU fraction of
each side's graph features, their linear CKA, and the phi mass per class of ground-truth box plus
its effective sample size (sum phi)^2 / sum phi^2.

The graph features are never materialised (see :mod:`pcdet.kd.graph_ops`); the KNN is chunked and
exact (:mod:`pcdet.kd.knn`). ``TEACHER_FEATURE`` (default: ``FEATURE``) names the teacher key when
it differs (e.g. another stride level with the same resolution). ``last_profile`` holds the
forward's timings (seconds) of the last call.
"""
import time

import numpy as np
import torch.nn as nn

from pcdet.config import ConfigError
from pcdet.kd.graph_ops import EdgeConvAdapter, EdgeGraph, graph_distill_loss
from pcdet.kd.knn import DEFAULT_MAX_CHUNK_ELEMS, knn_per_sample
from pcdet.kd.methods.base import KD_METHODS, KDMethod
from pcdet.kd.nodes import feature_spec, resolve_importance, reweight, sample_nodes


@KD_METHODS.register()
class PointDistiller(KDMethod):
    """PointDistiller: top-N important nodes, KNN graph + dynamic graph conv adapters, importance reweighting."""

    ALLOWED_KEYS = {
        "NAME", "WEIGHT", "FEATURE", "N", "K", "TAU", "KNN_SPACE", "IMPORTANCE", "LOCAL_DISTILLATION",
        "REWEIGHT", "MAX_POOL_K", "KNN_CHUNK_ELEMS", "BACKEND", "TEACHER_FEATURE", "LD_LOSS", "TEACHER_ADAPTER",
        "ADAPTER_CHANNELS",
    }
    LD_LOSSES = ("mean_square", "l2_norm")
    TEACHER_ADAPTERS = ("trainable", "frozen_random")
    REQUIRED_KEYS = ("FEATURE", "N")

    def __init__(self, cfg, student, teacher, where):
        super().__init__(cfg, where)
        self.feature, self.teacher_feature = self.feature_keys(cfg)
        self.n = int(cfg.N)
        self.local = bool(cfg.get("LOCAL_DISTILLATION", True))
        self.reweight = bool(cfg.get("REWEIGHT", True))
        self.k = cfg.get("K", None)
        self.tau = cfg.get("TAU", None)
        if self.local and self.k is None:
            raise ConfigError(f"{where}: K is required with LOCAL_DISTILLATION true")
        if self.reweight and self.tau is None:
            raise ConfigError(f"{where}: TAU is required with REWEIGHT true")
        if self.n < 1 or (self.k is not None and int(self.k) < 1):
            raise ConfigError(f"{where}: N and K must be positive (N={self.n}, K={self.k})")
        if self.tau is not None and float(self.tau) <= 0:
            raise ConfigError(f"{where}: TAU must be positive, got {self.tau}")
        self.k = int(self.k) if self.k is not None else None
        self.tau = float(self.tau) if self.tau is not None else None
        self.knn_space = str(cfg.get("KNN_SPACE", "feature"))
        if self.knn_space not in ("feature", "coordinate"):
            raise ConfigError(f"{where}: KNN_SPACE must be feature or coordinate, got {self.knn_space!r}")
        self.spec = feature_spec(student, self.feature)
        self.importance = resolve_importance(self.spec, str(cfg.get("IMPORTANCE", "auto")))
        self.max_pool_k = bool(cfg.get("MAX_POOL_K", False))
        self.knn_chunk = int(cfg.get("KNN_CHUNK_ELEMS", DEFAULT_MAX_CHUNK_ELEMS))
        self.backend = str(cfg.get("BACKEND", "auto"))
        self.ld_loss = str(cfg.get("LD_LOSS", "mean_square"))
        if self.ld_loss not in self.LD_LOSSES:
            raise ConfigError(f"{where}: LD_LOSS must be one of {self.LD_LOSSES}, got {self.ld_loss!r}")
        if self.ld_loss == "l2_norm" and (self.reweight or not self.local):
            raise ConfigError(f"{where}: LD_LOSS l2_norm is the release's form of local distillation without "
                              f"reweighting: it needs LOCAL_DISTILLATION true and REWEIGHT false")
        self.teacher_adapter = str(cfg.get("TEACHER_ADAPTER", "trainable"))
        if self.teacher_adapter not in self.TEACHER_ADAPTERS:
            raise ConfigError(f"{where}: TEACHER_ADAPTER must be one of {self.TEACHER_ADAPTERS}, "
                              f"got {self.teacher_adapter!r}")
        c_s = int(self.spec.channels)
        c_t = int(feature_spec(teacher, self.teacher_feature).channels)
        self.c_s, self.c_t = c_s, c_t
        self.diagnostics_every = 0  # set by the kd_diagnostics hook
        self.last_diagnostics = {}
        self._steps = 0
        self.class_names = list(getattr(student, "class_names", []))
        proc = getattr(getattr(student, "dataset", None), "data_processor", None)
        vs = getattr(proc, "voxel_size", None)
        self.grid_geometry = None if vs is None else (
            np.asarray(proc.point_cloud_range, dtype=np.float64),
            np.asarray(vs, dtype=np.float64) * float(self.spec.stride or 1))
        c_a = int(cfg.get("ADAPTER_CHANNELS") or c_s)
        if c_a < 1:
            raise ConfigError(f"{where}: ADAPTER_CHANNELS must be positive, got {c_a}")
        if self.local:
            frozen = self.teacher_adapter == "frozen_random"
            self.adapter_t = EdgeConvAdapter(c_t, c_a, affine=not frozen)
            if frozen:
                self.adapter_t.requires_grad_(False)
            self.adapter_s = EdgeConvAdapter(c_s, c_a)
        elif cfg.get("ADAPTER_CHANNELS"):
            raise ConfigError(f"{where}: ADAPTER_CHANNELS sets the graph adapters' width: it needs "
                              f"LOCAL_DISTILLATION true")
        else:
            self.adapter_s = nn.Linear(c_s, c_t)
        self.last_profile = {}

    def start_diagnostics(self, every, step=0):
        """Diagnostics every ``every`` training steps (0: none), the step counter starting at ``step``
        (the global step of a resumed run); called by ``DistillationWrapper.start_diagnostics``."""
        self.diagnostics_every, self._steps = int(every), int(step)

    def forward(self, batch_dict):
        t0 = time.perf_counter()
        diag_now = self.training and self.diagnostics_every and self._steps % self.diagnostics_every == 0
        if diag_now:
            self.last_diagnostics = {}
        nodes = sample_nodes(batch_dict, self.feature, self.n, self.importance, self.teacher_feature, spec=self.spec)
        phi = reweight(nodes.score, nodes.ptr, self.tau, self.reweight).detach()
        profile = {"sample_s": time.perf_counter() - t0, "knn_s": 0.0}
        tb = {"nodes": nodes.num_nodes}
        if nodes.num_nodes == 0:
            loss = self.zero_loss(batch_dict[self.feature], *self.parameters())
        elif self.local:
            space = nodes.feat_t if self.knn_space == "feature" else nodes.coords
            t1 = time.perf_counter()
            nbr, kcnt = knn_per_sample(space.detach(), nodes.ptr, self.k, max_chunk_elems=self.knn_chunk)
            profile["knn_s"] = time.perf_counter() - t1
            graph = EdgeGraph(nbr, kcnt)
            loss = graph_distill_loss(nodes.feat_t, nodes.feat_s, graph, self.adapter_t, self.adapter_s, phi,
                                      max_pool_k=self.max_pool_k, backend=self.backend)
            if self.ld_loss == "l2_norm":  # ||G_T - G_S||_2 = sqrt(mean (dG)^2 x entries), phi = 1 here
                entries = (nodes.num_nodes if self.max_pool_k else graph.num_edges) * self.adapter_s.c_out
                loss = (loss * entries).clamp_min(0).sqrt()
            if diag_now:
                from pcdet.kd.diagnostics import pointdistiller_diagnostics

                self.last_diagnostics = pointdistiller_diagnostics(self, batch_dict, nodes, graph, phi)
                tb.update({f"diag/{k}": v for k, v in self.last_diagnostics.items()})
        else:
            pred = self.adapter_s(nodes.feat_s)
            loss = (phi.unsqueeze(1) * (pred - nodes.feat_t) ** 2).mean()
        loss = self.weight * loss
        if self.training:
            self._steps += 1
        profile["forward_s"] = time.perf_counter() - t0
        self.last_profile = profile
        return loss, tb
