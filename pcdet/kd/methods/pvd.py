"""PVD: point-to-voxel KD for segmentors: point/voxel output KL + point/voxel affinity in sampled supervoxels.

Source: Hou et al., "Point-to-Voxel Knowledge Distillation for LiDAR Semantic Segmentation", CVPR 2022,
section 3 (eqs. 1-7), Tables 4-5 and Fig. 6. The authors' release (cardwing/Codes-for-PVKD) holds no
distillation code, so everything below is transcribed from the paper; what it leaves open is marked
"choice". Applied to: a segmentor whose teacher and student share the voxelisation (the same
cylindrical grid: voxel rows align one to one, which ``forward`` checks), on the keys named below.

Loss implemented (``L = WEIGHT * (ALPHA_POINT L_out^p + ALPHA_VOXEL L_out^v + BETA_POINT L_aff^p +
BETA_VOXEL L_aff^v)``, the KD part of eq. 7, published alpha1 0.1, alpha2 0.15, beta1 0.15, beta2 0.25;
the task terms WCE + Lovasz are the student's own loss; a term whose weight is 0 is not computed,
which gives the ablation rows of Table 4):

* pointwise output (eq. 1): L_out^p = 1/(N C) sum_n sum_c p_T(n, c) (log p_T(n, c) - log p_S(n, c)),
  p = softmax over the C = ``num_class`` logits of ``POINT_OUTPUT`` (default ``point_refine_logits``,
  the point refinement's output, the O^p of the paper), all N points of the batch. Choice: the teacher
  is the target distribution (the paper writes KL(O_S || O_T), the usual KD direction is the
  teacher's as target); no temperature (the paper names none).
* voxelwise output (eq. 2): the same on ``VOXEL_OUTPUT`` (default ``voxel_logits``). Eq. 2 divides by
  R A H C, the dense grid, where empty voxels have zero logits in both networks and add KL 0.
  ``VOXEL_NORMALISATION: nonempty`` (default) averages over the M non-empty voxels of the batch,
  1/(M C) sum, which is the paper's term times (B R A H) / M (about 30 to 200 times on these grids,
  for the same ALPHA_VOXEL); ``dense`` divides the same sum by B R A H C, the paper's constant.
* supervoxel partition (section 3.3): the grid (R, A, H) cut into blocks of ``SUPERVOXEL_SIZE`` =
  (R_s, A_s, H_s) cells (paper (120, 60, 8) on 480 x 360 x 32), N_s = ceil(R/R_s) ceil(A/A_s)
  ceil(H/H_s) supervoxels; voxel (r, a, h) belongs to (r // R_s, a // A_s, h // H_s).
* sampling (eq. 3, ``SAMPLING: difficulty``): W_i = 1/f_class * d_i/R * 1/N_s, f_class = 4 exp(-2
  N_minor) + 1, N_minor = the supervoxel's voxels whose label (the majority vote of their points,
  the ignored label included, as the student's own voxel labels) is a ``MINORITY_CLASSES`` class;
  d_i / R = the supervoxel's outer radial edge over the grid's radial extent, min((i_r + 1) R_s, R)
  / R (choice: the outer arc's distance to the origin divided by the grid's outer radius, which is
  this ratio for a grid that starts at rho = 0, as every config here); empty supervoxels get W = 0.
  K = ``K`` supervoxels per point cloud of the batch, drawn without replacement with P_i = W_i /
  sum W (choice: per point cloud; "at each distillation step" in the paper). Fig. 6's alternatives:
  ``distance`` (d_i/R only), ``category`` (1/f_class only), ``random`` (uniform over non-empty).
  Minority classes (classes with < 1% of the training set's points) are named in the config.
* fixed sizes: at most N_P points and N_V non-empty voxels per supervoxel; when there are more, points
  (voxels) of majority classes are discarded at random (minority ones only once no majority one is
  left); when fewer, all-zero features are appended (Fig. 3). A zero row has cosine similarity 0
  with everything in both networks, so the padded rows and columns add nothing to the sum and the
  loss is computed on the m x m block of the rows present, divided by N^2 (the same number).
* affinities (eqs. 4-6): C(i, j) = cosine similarity of the rows' features, point features
  ``POINT_FEATURE`` (default ``point_features``, the point feature extraction output) and voxel
  features ``VOXEL_FEATURE`` (default ``decoder_features``, the encoder-decoder output: the last up
  block, before DDCM, which Fig. 2 lists as a module of its own);
  L_aff = 1/(K N^2) sum_r sum_ij (C_S(i, j, r) - C_T(i, j, r))^2, averaged over every supervoxel drawn
  in the batch. Channel-free: teacher and student widths may differ, no adapter.
"""
import math

import torch

from pcdet.config import ConfigError
from pcdet.kd.keys import tea
from pcdet.kd.methods.base import KD_METHODS, KDMethod
from pcdet.kd.methods.common import SUPERVOXEL_SAMPLINGS, cosine_affinity, softmax_kl, student_map, supervoxel_weights
from pcdet.kd.nodes import full_precision
from pcdet.models.seg_heads.cylinder_seg_head import voxel_majority_labels


def output_kl(logits_s, logits_t):
    """Eqs. (1)/(2): 1/(M C) sum_m sum_c p_T (log p_T - log p_S) of (M, C) logits, softmax over C."""
    return softmax_kl(logits_s, logits_t)


def supervoxel_layout(grid, size):
    """``(splits (3,), outer (N_s,))``: supervoxels per axis, ceil(grid / size), and d_i / R of every
    supervoxel (index ((i_r * n_a) + i_a) * n_h + i_h): min((i_r + 1) R_s, R) / R."""
    splits = [math.ceil(int(g) / int(s)) for g, s in zip(grid, size)]
    n_s = splits[0] * splits[1] * splits[2]
    i_r = torch.arange(n_s) // (splits[1] * splits[2])
    outer = torch.clamp((i_r + 1) * int(size[0]), max=int(grid[0])).double() / int(grid[0])
    return splits, outer


def supervoxel_of(coords, size, splits):
    """Supervoxel index of every voxel of ``coords`` (V, 4) [batch, r, a, h]."""
    r, a, h = (coords[:, 1 + d].long() // int(size[d]) for d in range(3))
    return (r * splits[1] + a) * splits[2] + h


def keep_at_most(rows, minority, n):
    """At most ``n`` of ``rows``: all when there are n or fewer; else the minority rows first (a random
    subset of them if they alone exceed n), the rest filled with random majority rows."""
    if rows.numel() <= n:
        return rows
    minor, major = rows[minority], rows[~minority]
    minor = minor[torch.randperm(minor.numel(), device=rows.device)]
    major = major[torch.randperm(major.numel(), device=rows.device)]
    return torch.cat([minor, major])[:n]


def affinity_mse(feat_s, feat_t, n):
    """Eqs. (4)-(6) for one supervoxel: sum_ij (C_S - C_T)^2 / n^2 with both (m, C) feature sets
    zero-padded to n rows (m <= n); the padded entries are 0 on both sides, so the m x m block is summed."""
    if feat_s.shape[0] > n:
        raise ValueError(f"affinity of {feat_s.shape[0]} rows with N = {n}: keep at most N rows first")
    return (cosine_affinity(feat_s) - cosine_affinity(feat_t)).pow(2).sum() / float(n * n)


@KD_METHODS.register()
class PVD(KDMethod):
    """PVD (Hou et al.) for segmentors: point/voxel output KL + point/voxel affinity in sampled supervoxels."""

    ALLOWED_KEYS = {"NAME", "WEIGHT", "ALPHA_POINT", "ALPHA_VOXEL", "BETA_POINT", "BETA_VOXEL", "SUPERVOXEL_SIZE",
                    "K", "N_P", "N_V", "SAMPLING", "MINORITY_CLASSES", "POINT_OUTPUT", "VOXEL_OUTPUT",
                    "POINT_FEATURE", "VOXEL_FEATURE", "VOXEL_NORMALISATION"}
    REQUIRED_KEYS = ("MINORITY_CLASSES",)

    def __init__(self, cfg, student, teacher, where):
        super().__init__(cfg, where)
        self.require_segmentor(student, where, "PVD distils segmentors (PVDDet is the detector adaptation)")
        self.alpha_p = float(cfg.get("ALPHA_POINT", 0.1))
        self.alpha_v = float(cfg.get("ALPHA_VOXEL", 0.15))
        self.beta_p = float(cfg.get("BETA_POINT", 0.15))
        self.beta_v = float(cfg.get("BETA_VOXEL", 0.25))
        if not (self.alpha_p or self.alpha_v or self.beta_p or self.beta_v):
            raise ConfigError(f"{where}: ALPHA_POINT, ALPHA_VOXEL, BETA_POINT and BETA_VOXEL are all 0")
        self.k = int(cfg.get("K", 4))
        self.n_p = int(cfg.get("N_P", 6000))
        self.n_v = int(cfg.get("N_V", 3000))
        if min(self.k, self.n_p, self.n_v) < 1:
            raise ConfigError(f"{where}: K, N_P and N_V must be positive, got {self.k}, {self.n_p}, {self.n_v}")
        self.sampling = str(cfg.get("SAMPLING", "difficulty"))
        if self.sampling not in SUPERVOXEL_SAMPLINGS:
            raise ConfigError(f"{where}: SAMPLING {self.sampling!r}: expected one of {SUPERVOXEL_SAMPLINGS}")
        self.point_output = str(cfg.get("POINT_OUTPUT", "point_refine_logits"))
        self.voxel_output = str(cfg.get("VOXEL_OUTPUT", "voxel_logits"))
        self.point_feature = str(cfg.get("POINT_FEATURE", "point_features"))
        self.voxel_feature = str(cfg.get("VOXEL_FEATURE", "decoder_features"))
        self.voxel_normalisation = str(cfg.get("VOXEL_NORMALISATION", "nonempty"))
        if self.voxel_normalisation not in ("nonempty", "dense"):
            raise ConfigError(f"{where}: VOXEL_NORMALISATION {self.voxel_normalisation!r}: expected nonempty or dense")
        self.feature = self.voxel_feature  # where the diagnostics measure the KD / task gradient ratio

        self.grid = [int(g) for g in student.dataset.data_processor.grid_size]
        size = [int(s) for s in cfg.get("SUPERVOXEL_SIZE", [120, 60, 8])]
        if len(size) != 3 or min(size) < 1:
            raise ConfigError(f"{where}: SUPERVOXEL_SIZE must be 3 positive cell counts (R_s, A_s, H_s), got {size}")
        self.size = size
        self.splits, self.outer = supervoxel_layout(self.grid, size)
        self.num_supervoxels = len(self.outer)

        names = list(student.class_names)
        minority = list(cfg.MINORITY_CLASSES)
        unknown = [c for c in minority if c not in names]
        if unknown:
            raise ConfigError(f"{where}: MINORITY_CLASSES {unknown} are not among the classes {names}")
        if student.ignore_label not in (None, 0):
            raise ConfigError(f"{where}: PVD maps class names to labels with the ignored label 0 or none, "
                              f"not {student.ignore_label}")
        offset = 1 if student.ignore_label == 0 else 0  # labels 1..C when 0 is the ignored "unlabeled"
        self.num_logits = int(student.num_logits)
        lut = torch.zeros(self.num_logits, dtype=torch.bool)
        lut[[names.index(c) + offset for c in minority]] = True
        self.register_buffer("minority_lut", lut, persistent=False)

    # ------------------------------------------------------------------ pieces (tested one by one)
    def _shared_voxels(self, batch_dict):
        coords, coords_t = batch_dict["voxel_coords"], batch_dict.get(tea("voxel_coords"))
        if coords_t is not None and (coords_t.shape != coords.shape or not torch.equal(coords_t, coords)):
            raise ValueError(f"{self.where}: PVD needs teacher and student on the same grid (voxel rows aligned one "
                             f"to one); the teacher has {coords_t.shape[0]} voxels, the student {coords.shape[0]} "
                             f"or a different order")
        return coords

    def _pair(self, batch_dict, key):
        if key not in batch_dict or tea(key) not in batch_dict:
            raise KeyError(f"{self.where}: PVD reads {key!r} and {tea(key)!r}; present: {sorted(batch_dict)}")
        s, t = student_map(batch_dict, key), full_precision(batch_dict[tea(key)].detach())
        if s.shape[0] != t.shape[0]:
            raise ValueError(f"{self.where}: {key}: {s.shape[0]} student rows vs {t.shape[0]} teacher rows")
        return s, t

    def sampling_weights(self, sv_of_voxel, voxel_minority):
        """W (N_s,) of one point cloud's voxels: their supervoxel ids and minority flags (eq. 3 / Fig. 6)."""
        n_s = self.num_supervoxels
        n_minor = torch.bincount(sv_of_voxel[voxel_minority], minlength=n_s).cpu()
        nonempty = torch.bincount(sv_of_voxel, minlength=n_s).cpu() > 0
        return supervoxel_weights(n_minor, self.outer, nonempty, self.sampling)

    def affinity_losses(self, batch_dict, coords):
        """(L_aff^p, L_aff^v, supervoxels drawn) over the batch."""
        ps, pt = self._pair(batch_dict, self.point_feature) if self.beta_p else (None, None)
        vs, vt = self._pair(batch_dict, self.voxel_feature) if self.beta_v else (None, None)
        p2v = batch_dict["point_to_voxel"].long()
        labels = batch_dict["point_labels"].long()
        point_batch = batch_dict["points"][:, 0].long()
        voxel_labels = voxel_majority_labels(p2v, labels, coords.shape[0], self.num_logits)
        lut = self.minority_lut.to(labels.device)
        voxel_minor, point_minor = lut[voxel_labels], lut[labels]
        sv = supervoxel_of(coords, self.size, self.splits)
        point_sv = sv[p2v]
        ref = vs if vs is not None else ps
        l_p, l_v, drawn = ref.new_zeros(()), ref.new_zeros(()), 0
        for b in range(int(batch_dict["batch_size"])):
            vrows = torch.nonzero(coords[:, 0].long() == b).squeeze(1)
            if vrows.numel() == 0:
                continue
            wts = self.sampling_weights(sv[vrows], voxel_minor[vrows])
            k = min(self.k, int((wts > 0).sum()))
            if k == 0:
                continue
            prows = torch.nonzero(point_batch == b).squeeze(1)
            for r in torch.multinomial(wts, k, replacement=False).tolist():
                if vs is not None:
                    rows = vrows[sv[vrows] == r]
                    rows = keep_at_most(rows, voxel_minor[rows], self.n_v)
                    l_v = l_v + affinity_mse(vs[rows], vt[rows], self.n_v)
                if ps is not None:
                    rows = prows[point_sv[prows] == r]
                    rows = keep_at_most(rows, point_minor[rows], self.n_p)
                    l_p = l_p + affinity_mse(ps[rows], pt[rows], self.n_p)
                drawn += 1
        if drawn:
            l_p, l_v = l_p / drawn, l_v / drawn
        return l_p, l_v, drawn

    def forward(self, batch_dict):
        coords = self._shared_voxels(batch_dict)
        terms, tb = [], {}
        if self.alpha_p:
            l_out_p = output_kl(*self._pair(batch_dict, self.point_output))
            terms.append(self.alpha_p * l_out_p)
            tb["out_p"] = float(l_out_p.detach())
        if self.alpha_v:
            l_out_v = output_kl(*self._pair(batch_dict, self.voxel_output))
            if self.voxel_normalisation == "dense":  # sum / (B R A H C) instead of / (M C)
                l_out_v = l_out_v * coords.shape[0] / (int(batch_dict["batch_size"]) * math.prod(self.grid))
            terms.append(self.alpha_v * l_out_v)
            tb["out_v"] = float(l_out_v.detach())
        if self.beta_p or self.beta_v:
            l_aff_p, l_aff_v, drawn = self.affinity_losses(batch_dict, coords)
            if self.beta_p:
                terms.append(self.beta_p * l_aff_p)
                tb["aff_p"] = float(l_aff_p.detach())
            if self.beta_v:
                terms.append(self.beta_v * l_aff_v)
                tb["aff_v"] = float(l_aff_v.detach())
            tb["supervoxels"] = drawn
        return self.weight * sum(terms), tb
