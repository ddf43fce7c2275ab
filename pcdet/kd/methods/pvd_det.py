"""PVDDet: point-to-voxel knowledge distillation (Hou et al., CVPR 2022) adapted to a pillar detector.

Source: Hou et al., "Point-to-Voxel Knowledge Distillation for LiDAR Semantic Segmentation", CVPR 2022,
eqs. (1)-(7). The paper distils a segmentation network (that method is ``PVD``, for segmentors); this
is the detection adaptation the PointDistiller appendix compares against (Table 4, "Hou").
Applied to PointPillars as follows (the mapping is this project's choice, the formulas are the paper's).
Loss implemented:
  * voxelwise output (eq. 2): the anchor head's class map, one "voxel" per BEV cell of the head:
    L_out^v = mean_{b, cell, anchor, class} KL(p_T || p_S), p = sigmoid (binary KL per class: the head is
    a sigmoid one; the paper's KL of softmax outputs, teacher as target);
  * pointwise output (eq. 1): every point inherits the output of the cell holding its pillar, so the
    mean over points is the mean over non-empty pillars weighted by their point counts
    (``voxel_num_points_tea``);
  * supervoxels: the head's BEV map cut into ``SUPERVOXELS`` = [n_y, n_x] blocks (N_s = n_y n_x);
    difficulty-aware sampling (eq. 3): W_i = 1 / f_class x d_i / R x 1 / N_s with
    f_class = 4 exp(-2 N_minor) + 1, N_minor = non-empty cells of the block inside a ground-truth box of
    a ``MINORITY_CLASSES`` class, d_i = distance of the block's farthest corner to the sensor in the X-Y
    plane, R = the largest d_i; blocks without points get W = 0; ``K`` blocks per sample are drawn
    without replacement with P_i = W_i / sum W;
  * inter-point affinity (eqs. 4-5) on ``pillar_features`` (the point feature extraction output) of the
    block's pillars, inter-voxel affinity (eq. 6) on ``spatial_features_2d`` (the backbone output) of
    the block's non-empty cells; at most ``N_P`` / ``N_V`` of them (a random subset when there are more),
    zero-padded to N_P / N_V as in the paper; C(i, j) = cosine similarity;
    L_aff = 1 / (K N^2) sum_r sum_ij (C_S - C_T)^2 (mean over all drawn blocks of the batch).
  L = WEIGHT * (ALPHA_POINT L_out^p + ALPHA_VOXEL L_out^v + BETA_POINT L_aff^p + BETA_VOXEL L_aff^v),
  published 0.1, 0.15, 0.15, 0.25. Affinities are channel-free: no adapter.
"""
import numpy as np
import torch

from pcdet.kd.methods.base import KD_METHODS, KDMethod
from pcdet.kd.keys import TEA, tea
from pcdet.kd.methods.common import difficulty_weights, gt_bev_masks, head_view, padded_affinity, point_cloud_range_of
from pcdet.kd.methods.common import sigmoid_kl
from pcdet.kd.methods.common import student_map, teacher_map


@KD_METHODS.register()
class PVDDet(KDMethod):
    """PVDDet: PVD (Hou et al.) adapted to a detector: point/voxel output KL + point/voxel affinity in sampled supervoxels."""

    ALLOWED_KEYS = {"NAME", "WEIGHT", "ALPHA_POINT", "ALPHA_VOXEL", "BETA_POINT", "BETA_VOXEL", "SUPERVOXELS", "K",
                    "N_P", "N_V", "MINORITY_CLASSES", "POINT_FEATURE", "VOXEL_FEATURE"}

    def __init__(self, cfg, student, teacher, where):
        super().__init__(cfg, where)
        self.num_class = int(student.num_class)
        self.view_s, self.view_t = head_view(student, where), head_view(teacher, where)
        self.pcr = point_cloud_range_of(student)
        self.alpha_p = float(cfg.get("ALPHA_POINT", 0.1))
        self.alpha_v = float(cfg.get("ALPHA_VOXEL", 0.15))
        self.beta_p = float(cfg.get("BETA_POINT", 0.15))
        self.beta_v = float(cfg.get("BETA_VOXEL", 0.25))
        self.sv = [int(v) for v in cfg.get("SUPERVOXELS", [4, 4])]
        self.k = int(cfg.get("K", 4))
        self.n_p = int(cfg.get("N_P", 1000))
        self.n_v = int(cfg.get("N_V", 1000))
        self.point_feature = str(cfg.get("POINT_FEATURE", "pillar_features"))
        self.voxel_feature = str(cfg.get("VOXEL_FEATURE", "spatial_features_2d"))
        names = list(student.class_names)
        minority = list(cfg.get("MINORITY_CLASSES", names[1:]))
        unknown = [c for c in minority if c not in names]
        if unknown:
            raise ValueError(f"{where}: MINORITY_CLASSES {unknown} are not among the classes {names}")
        self.minority_ids = [names.index(c) + 1 for c in minority]
        grid = getattr(student.dataset, "grid_size", None)
        if grid is None:
            grid = student.dataset.data_processor.grid_size
        self.grid_yx = (int(grid[1]), int(grid[0]))

    # ------------------------------------------------------------------ pieces (tested one by one)
    def output_losses(self, zs, zt, coords, npoints):
        """(L_out^p, L_out^v) from (B, H, W, A, C) logits and the pillars' (b, z, y, x) coords / point counts."""
        kl = sigmoid_kl(zs, zt).mean(dim=(3, 4))  # (B, H, W)
        l_vox = kl.mean()
        h, w = kl.shape[1:]
        sy, sx = self.grid_yx[0] // h, self.grid_yx[1] // w
        cell_kl = kl[coords[:, 0].long(), coords[:, 2].long() // sy, coords[:, 3].long() // sx]
        wts = npoints.to(kl.dtype)
        l_pt = (cell_kl * wts).sum() / wts.sum().clamp(min=1)
        return l_pt, l_vox

    def block_of_cells(self, h, w):
        """(H, W) block index of every head cell, and per block its farthest-corner distance (n_blocks,)."""
        by, bx = int(np.ceil(h / self.sv[0])), int(np.ceil(w / self.sv[1]))
        rows = torch.arange(h) // by
        cols = torch.arange(w) // bx
        block = rows[:, None] * self.sv[1] + cols[None, :]
        dist = torch.zeros(self.sv[0] * self.sv[1], dtype=torch.float64)
        cy = (self.pcr[4] - self.pcr[1]) / h
        cx = (self.pcr[3] - self.pcr[0]) / w
        for i in range(self.sv[0]):
            for j in range(self.sv[1]):
                y0, y1 = self.pcr[1] + i * by * cy, self.pcr[1] + min((i + 1) * by, h) * cy
                x0, x1 = self.pcr[0] + j * bx * cx, self.pcr[0] + min((j + 1) * bx, w) * cx
                dist[i * self.sv[1] + j] = max(np.hypot(x, y) for x in (x0, x1) for y in (y0, y1))
        return block, dist

    def affinity_losses(self, batch_dict, h, w):
        ps = student_map(batch_dict, self.point_feature)
        pt = batch_dict[tea(self.point_feature)].detach().float()
        fs = student_map(batch_dict, self.voxel_feature)
        ft = teacher_map(batch_dict, self.voxel_feature, fs)
        coords = batch_dict["voxel_coords"]
        if ps.shape[0] != pt.shape[0]:
            raise ValueError(f"{self.where}: inter-point affinity needs a shared voxelisation "
                             f"({ps.shape[0]} student vs {pt.shape[0]} teacher pillars)")
        hf, wf = fs.shape[2:]
        sy, sx = self.grid_yx[0] // hf, self.grid_yx[1] // wf
        block, dist = self.block_of_cells(hf, wf)
        block = block.to(fs.device)
        owner, boxes = gt_bev_masks(batch_dict["gt_boxes"], hf, wf, self.pcr)
        l_p, l_v, drawn = fs.new_zeros(()), fs.new_zeros(()), 0
        for b in range(fs.shape[0]):
            sel = coords[:, 0].long() == b
            pil = torch.nonzero(sel).squeeze(1)
            cy, cx = coords[pil, 2].long() // sy, coords[pil, 3].long() // sx
            occ = torch.zeros(hf, wf, dtype=torch.bool, device=fs.device)
            occ[cy, cx] = True
            labels = boxes[b][:, -1].long().to(fs.device)
            minority_box = torch.zeros(labels.numel() + 1, dtype=torch.bool, device=fs.device)
            for cid in self.minority_ids:
                minority_box[:-1] |= labels == cid
            in_minor = minority_box[owner[b]] & (owner[b] >= 0)  # owner -1 indexes the trailing False
            nb = len(dist)
            n_minor = torch.bincount(block[occ & in_minor], minlength=nb).cpu()
            nonempty = torch.bincount(block[occ], minlength=nb).cpu() > 0
            wts = difficulty_weights(n_minor, dist, nonempty)
            k = min(self.k, int(nonempty.sum()))
            if k == 0:
                continue
            chosen = torch.multinomial(wts, k, replacement=False).tolist()
            pil_block = block[cy, cx]
            for r in chosen:
                cells = torch.nonzero((block == r) & occ)
                if cells.shape[0] > self.n_v:
                    cells = cells[torch.randperm(cells.shape[0], device=cells.device)[: self.n_v]]
                vs, vt = fs[b, :, cells[:, 0], cells[:, 1]].t(), ft[b, :, cells[:, 0], cells[:, 1]].t()
                l_v = l_v + (padded_affinity(vs, self.n_v) - padded_affinity(vt, self.n_v)).pow(2).sum() / self.n_v ** 2
                rows = pil[pil_block == r]
                if rows.numel() > self.n_p:
                    rows = rows[torch.randperm(rows.numel(), device=rows.device)[: self.n_p]]
                diff = padded_affinity(ps[rows], self.n_p) - padded_affinity(pt[rows], self.n_p)
                l_p = l_p + diff.pow(2).sum() / self.n_p ** 2
                drawn += 1
        if drawn:
            l_p, l_v = l_p / drawn, l_v / drawn
        return l_p, l_v, drawn

    def forward(self, batch_dict):
        zs = self.view_s(batch_dict)["cls"]
        zt = self.view_t(batch_dict, TEA)["cls"].detach()
        coords = batch_dict["voxel_coords"]
        npts = batch_dict.get(tea("voxel_num_points"), batch_dict["voxel_num_points"])
        l_out_p, l_out_v = self.output_losses(zs, zt, coords, npts)
        l_aff_p, l_aff_v, drawn = self.affinity_losses(batch_dict, zs.shape[1], zs.shape[2])
        loss = self.alpha_p * l_out_p + self.alpha_v * l_out_v + self.beta_p * l_aff_p + self.beta_v * l_aff_v
        tb = {"out_p": float(l_out_p.detach()), "out_v": float(l_out_v.detach()), "aff_p": float(l_aff_p.detach()),
              "aff_v": float(l_aff_v.detach()), "supervoxels": drawn}
        return self.weight * loss, tb
