"""CRD: contrastive representation distillation with momentum memory banks and NCE.

Source: Tian, Krishnan & Isola, "Contrastive Representation Distillation", ICLR 2020.
Loss implemented (the paper's NCE form, both directions):
  v_S = l2norm(W_S f_S), v_T = l2norm(W_T f_T) (linear embeddings to ``EMBED_DIM`` = 128);
  for an instance i with memory slot s_i and ``NCE_K`` random slots j (uniform over the bank),
  h(v, m) = exp(v . m / ``NCE_T``) / Z, with Z fixed at the first batch to mean(h) * n (n = bank size);
  P_n = 1 / n; L_anchor = -[log h_pos / (h_pos + K P_n) + sum_j log K P_n / (h_j + K P_n)] / M;
  the student embedding is contrasted with the teacher memory and vice versa;
  L = WEIGHT * (L_S + L_T); after the step each side's memory slot becomes
  l2norm(``MOMENTUM`` m + (1 - ``MOMENTUM``) v).
Defaults as published: 128-d, momentum 0.5, 16384 negatives, tau 0.07, weight 0.8.

Applied to (a choice for 3D detection; the paper's instances are images): an *instance* is a ground-truth
box of the batch (``gt_boxes``); its feature is the ``FEATURE`` map (default ``spatial_features_2d``)
at the cell holding the box centre, on both sides. The memory is indexed by a slot derived from the
frame id and the box's row (``crc32(frame_id) * 1009 + row`` modulo ``BANK_SIZE``, default 16384):
the same labelled object maps to the same slot across epochs (the row order of a frame's boxes is
stable), unrelated objects may share a slot (a hash collision; harmless noise for the negatives).
The banks and Z are buffers: saved in training checkpoints, resumed with them.
"""
import math
import zlib

import torch
import torch.nn as nn
import torch.nn.functional as F

from pcdet.kd.methods.base import KD_METHODS, KDMethod
from pcdet.kd.methods.common import point_cloud_range_of, student_map, teacher_map, valid_gt
from pcdet.kd.nodes import feature_channels


def nce_loss(h, num_noise, n_data, eps=1e-7):
    """CRD's NCE objective: ``h`` (M, 1 + K) normalised scores, column 0 the positive."""
    pn = 1.0 / float(n_data)
    m_pn = num_noise * pn
    log_d1 = torch.log(h[:, 0] / (h[:, 0] + m_pn + eps))
    log_d0 = torch.log(m_pn / (h[:, 1:] + m_pn + eps))
    return -(log_d1.sum() + log_d0.sum()) / h.shape[0]


def instance_slots(frame_ids, rows, bank_size):
    """Memory slot of each (frame, box row): crc32(frame_id) * 1009 + row, modulo the bank size."""
    return [(zlib.crc32(str(f).encode()) * 1009 + int(r)) % int(bank_size) for f, r in zip(frame_ids, rows)]


@KD_METHODS.register()
class CRD(KDMethod):
    """CRD: NCE between student/teacher embeddings of GT-box instances with momentum memory banks."""

    ALLOWED_KEYS = {"NAME", "WEIGHT", "FEATURE", "TEACHER_FEATURE", "EMBED_DIM", "NCE_K", "NCE_T", "MOMENTUM", "BANK_SIZE"}

    def __init__(self, cfg, student, teacher, where):
        super().__init__(cfg, where)
        self.feature, self.teacher_feature = self.feature_keys(cfg, default="spatial_features_2d")
        dim = int(cfg.get("EMBED_DIM", 128))
        self.nce_k = int(cfg.get("NCE_K", 16384))
        self.nce_t = float(cfg.get("NCE_T", 0.07))
        self.momentum = float(cfg.get("MOMENTUM", 0.5))
        self.bank_size = int(cfg.get("BANK_SIZE", 16384))
        if self.bank_size < 2:
            raise ValueError(f"{where}: BANK_SIZE must be at least 2")
        self.embed_s = nn.Linear(feature_channels(student, self.feature), dim)
        self.embed_t = nn.Linear(feature_channels(teacher, self.teacher_feature), dim)
        self.pcr = point_cloud_range_of(student)
        stdv = 1.0 / math.sqrt(dim / 3)
        self.register_buffer("memory_s", F.normalize(torch.rand(self.bank_size, dim) * 2 * stdv - stdv, dim=1))
        self.register_buffer("memory_t", F.normalize(torch.rand(self.bank_size, dim) * 2 * stdv - stdv, dim=1))
        self.register_buffer("z_s", torch.tensor(-1.0))
        self.register_buffer("z_t", torch.tensor(-1.0))

    def instances(self, batch_dict, fs, ft):
        """(student features (M, C_S), teacher features (M, C_T), slots (M,)) of the batch's GT boxes."""
        b, _, h, w = fs.shape
        gt = batch_dict["gt_boxes"]
        frame_ids = batch_dict.get("frame_id", list(range(b)))
        feats_s, feats_t, frames, rows = [], [], [], []
        for i in range(b):
            boxes = valid_gt(gt[i])
            if boxes.shape[0] == 0:
                continue
            col = ((boxes[:, 0] - self.pcr[0]) / (self.pcr[3] - self.pcr[0]) * w).long().clamp(0, w - 1)
            row = ((boxes[:, 1] - self.pcr[1]) / (self.pcr[4] - self.pcr[1]) * h).long().clamp(0, h - 1)
            feats_s.append(fs[i, :, row, col].t())
            feats_t.append(ft[i, :, row, col].t())
            frames += [frame_ids[i]] * boxes.shape[0]
            rows += list(range(boxes.shape[0]))
        if not feats_s:
            return None, None, None
        slots = torch.as_tensor(instance_slots(frames, rows, self.bank_size), dtype=torch.long, device=fs.device)
        return torch.cat(feats_s), torch.cat(feats_t), slots

    def _scores(self, v, memory, slots, z_buf):
        m = v.shape[0]
        noise = torch.randint(0, self.bank_size, (m, self.nce_k), device=v.device)
        idx = torch.cat([slots[:, None], noise], dim=1)
        # dot products with the whole bank, then the drawn columns: the same numbers as gathering
        # (M, 1 + K, D) memory rows first, at a fraction of the memory traffic
        dots = v @ memory.detach().t().clone()  # (M, n); a copy: the bank is updated in place after this step
        h = torch.exp(torch.gather(dots, 1, idx) / self.nce_t)
        if float(z_buf) < 0:
            z_buf.fill_(float(h.mean().detach()) * self.bank_size)
        return h / z_buf

    @torch.no_grad()
    def _update(self, memory, slots, v):
        pos = memory[slots] * self.momentum + v.detach() * (1 - self.momentum)
        memory[slots] = F.normalize(pos, dim=1)

    def forward(self, batch_dict):
        fs = student_map(batch_dict, self.feature)
        ft = teacher_map(batch_dict, self.teacher_feature, fs)
        f_s, f_t, slots = self.instances(batch_dict, fs, ft)
        if f_s is None:
            return self.weight * self.zero_loss(fs, *self.parameters()), {"instances": 0}
        v_s = F.normalize(self.embed_s(f_s), dim=1)
        v_t = F.normalize(self.embed_t(f_t), dim=1)
        h_s = self._scores(v_s, self.memory_t, slots, self.z_s)  # student anchor vs teacher memory
        h_t = self._scores(v_t, self.memory_s, slots, self.z_t)  # teacher anchor vs student memory
        loss = nce_loss(h_s, self.nce_k, self.bank_size) + nce_loss(h_t, self.nce_k, self.bank_size)
        if self.training:
            self._update(self.memory_s, slots, v_s)
            self._update(self.memory_t, slots, v_t)
        return self.weight * loss, {"instances": int(slots.numel())}
