"""Cylinder3D's segmentation head: sparse voxel logits, point-wise refinement, CE + Lovasz-softmax.

Voxel logits: SubM 3x3x3 over the UNet's concat features (4s -> K), as the original's ``logits``
layer (xinge008/Cylinder3D ``network/segmentator_3d_asymm_spconv.py``); spconv's CPU convolution
refuses a bias, so the conv is bias-free and the bias is a separate parameter added to the features
(same function, same parameter count, initialised like spconv's bias: U(-1/sqrt(fan_in), +)). The
logits stay **sparse**, one row per occupied voxel (the original takes ``.dense()`` =
B x K x 480 x 360 x 32 and computes its losses there; empty cells carry label 0 = ignored, so the
sparse losses are the same numbers).

Point-wise refinement (``POINT_REFINEMENT``, default True), absent from the public Cylinder3D code
and taken from the PVD authors' lab (PJLab-ADG/OpenPCSeg ``cylinder_ts.py``, ``POINT_REFINEMENT``):
gather each point's voxel features (4s) -> Linear(4s, P) + BN + LeakyReLU, add the point MLP's
feature (P channels) -> Linear(P, K) point logits. Predictions come from the voxel logits
(``PREDICT_FROM: voxel``, as OpenPCSeg tests; ``point`` uses the refined point logits).

K = ``num_class`` logits: the segmentor passes the dataset's classes plus its ignored class (for
SemanticKITTI 20, class 0 = unlabeled, as the original's 20 outputs).

Losses (``LOSS_WEIGHTS``: ``ce``, ``lovasz``, ``point_ce``; default 1 each): the voxel label is the
majority vote of its points' labels **including the ignored 0** (the original's
``nb_process_label``; ties go to the lower label, like its argmax); unweighted cross-entropy with
``ignore_index`` over voxels (the original's ``CrossEntropyLoss(ignore_index=0)``, its code is
unweighted) + Lovasz-softmax over the voxels' softmax (``classes='present'``, ignore 0;
:func:`pcdet.utils.loss_utils.lovasz_softmax`) + cross-entropy of the refined point logits.

Reads ``unet_sparse_tensor``, ``voxel_coords``, ``point_to_voxel``, ``point_features`` and, in
training, ``point_labels``. Writes ``voxel_logits`` (V, K), ``point_logits`` (N, K) (what
predictions use) and, with refinement, ``point_refine_logits`` (N, K).
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from pcdet.config import check_keys
from pcdet.models.model_template import FeatureSpec
from pcdet.models.registries import SEG_HEADS
from pcdet.utils.loss_utils import lovasz_softmax
from pcdet.utils.spconv_utils import spconv

LOSS_KEYS = {"ce", "lovasz", "point_ce"}


def voxel_majority_labels(point_to_voxel, point_labels, num_voxels, num_classes):
    """(V,) label of every voxel: the most frequent label of its points (ignored label included;
    ties -> the lowest label)."""
    counts = torch.zeros((num_voxels, num_classes), dtype=torch.int64, device=point_labels.device)
    counts.index_put_((point_to_voxel, point_labels), torch.ones_like(point_labels), accumulate=True)
    return counts.argmax(dim=1)


@SEG_HEADS.register("CylinderSegHead")
class CylinderSegHead(nn.Module):
    ALLOWED_KEYS = {"NAME", "POINT_REFINEMENT", "PREDICT_FROM", "LOSS_WEIGHTS"}

    def __init__(self, model_cfg, input_channels, num_class, ignore_index=None, feature_specs=None, **kwargs):
        super().__init__()
        check_keys(model_cfg, self.ALLOWED_KEYS, "MODEL.SEG_HEAD (CylinderSegHead)")
        self.num_class = int(num_class)
        self.ignore_index = ignore_index
        self.logits = spconv.SubMConv3d(input_channels, self.num_class, kernel_size=3, stride=1, padding=1,
                                        bias=False, indice_key="subm0_333")
        bound = 1.0 / math.sqrt(input_channels * 27)
        self.logits_bias = nn.Parameter(torch.empty(self.num_class).uniform_(-bound, bound))
        self.refine = bool(model_cfg.get("POINT_REFINEMENT", True))
        if self.refine:
            spec = (feature_specs or {}).get("point_features")
            if spec is None:
                raise ValueError("MODEL.SEG_HEAD.POINT_REFINEMENT needs a VFE that writes point_features")
            p = spec.channels
            self.refine_voxel = nn.Sequential(nn.Linear(input_channels, p), nn.BatchNorm1d(p), nn.LeakyReLU())
            self.refine_logits = nn.Linear(p, self.num_class)
        self.predict_from = str(model_cfg.get("PREDICT_FROM", "voxel"))
        if self.predict_from not in ("voxel", "point") or (self.predict_from == "point" and not self.refine):
            raise ValueError(f"MODEL.SEG_HEAD.PREDICT_FROM: 'voxel' or (with POINT_REFINEMENT) 'point', "
                             f"got {self.predict_from!r}")
        weights = dict(model_cfg.get("LOSS_WEIGHTS", None) or {})
        unknown = set(weights) - LOSS_KEYS
        if unknown:
            raise ValueError(f"MODEL.SEG_HEAD.LOSS_WEIGHTS: unknown term(s) {sorted(unknown)} (known: {sorted(LOSS_KEYS)})")
        self.loss_weights = {k: float(weights.get(k, 1.0)) for k in sorted(LOSS_KEYS)}
        if not self.refine:
            self.loss_weights["point_ce"] = 0.0
        self.forward_ret = {}

    def feature_specs(self, info):
        specs = {"voxel_logits": FeatureSpec(self.num_class, "sparse_rows", coord_key="voxel_coords"),
                 "point_logits": FeatureSpec(self.num_class, "points", coord_key="points")}
        if self.refine:
            specs["point_refine_logits"] = FeatureSpec(self.num_class, "points", coord_key="points")
        return specs

    def forward(self, batch_dict):
        x = batch_dict["unet_sparse_tensor"]
        voxel_logits = self.logits(x).features + self.logits_bias
        p2v = batch_dict["point_to_voxel"]
        batch_dict["voxel_logits"] = voxel_logits
        refine_logits = None
        if self.refine:
            point_feats = batch_dict["point_features"] + self.refine_voxel(x.features)[p2v]
            refine_logits = self.refine_logits(point_feats)
            batch_dict["point_refine_logits"] = refine_logits
        batch_dict["point_logits"] = refine_logits if self.predict_from == "point" else voxel_logits[p2v]
        self.forward_ret = {"voxel_logits": voxel_logits, "refine_logits": refine_logits, "point_to_voxel": p2v,
                            "point_labels": batch_dict.get("point_labels", None)}
        return batch_dict

    def get_loss(self):
        ret = self.forward_ret
        labels = ret["point_labels"]
        if labels is None:
            raise RuntimeError("CylinderSegHead.get_loss: the batch has no point_labels")
        labels = labels.long()
        ignore = -100 if self.ignore_index is None else int(self.ignore_index)
        voxel_logits = ret["voxel_logits"]
        voxel_labels = voxel_majority_labels(ret["point_to_voxel"], labels, voxel_logits.shape[0], self.num_class)
        terms = {}
        if (voxel_labels != ignore).any():
            terms["ce"] = F.cross_entropy(voxel_logits, voxel_labels, ignore_index=ignore)
        else:  # nothing labelled in the batch: a zero that keeps the graph
            terms["ce"] = voxel_logits.sum() * 0.0
        terms["lovasz"] = lovasz_softmax(F.softmax(voxel_logits, dim=1), voxel_labels, ignore=self.ignore_index)
        if self.refine and self.loss_weights["point_ce"] > 0:
            if (labels != ignore).any():
                terms["point_ce"] = F.cross_entropy(ret["refine_logits"], labels, ignore_index=ignore)
            else:
                terms["point_ce"] = ret["refine_logits"].sum() * 0.0
        loss = sum(self.loss_weights[k] * v for k, v in terms.items())
        tb = {f"loss_{k}": float(v.detach()) for k, v in terms.items()}
        tb["loss_seg"] = float(loss.detach())
        return loss, tb
