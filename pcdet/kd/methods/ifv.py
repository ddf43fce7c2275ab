"""IFV: intra-class feature variation distillation of a segmentor's voxel features.

Source: Wang et al., "Intra-class Feature Variation Distillation for Semantic Segmentation", ECCV 2020;
one of the segmentation baselines of PVD (Hou et al., CVPR 2022, Tables 1-3). Reference code:
YukangWang/IFVD ``utils/criterion.py`` ``CriterionIFV`` (weight ``lambda_ifv`` 200).
Loss implemented: per sample and class c, the prototype m_c = mean of the features of the voxels
labelled c; the IFV map of voxel i is cos(f_i, m_{y_i}); L = WEIGHT * mean_i (IFV_s(i) - IFV_t(i))^2
over every voxel of the batch. As in the reference, a voxel with the ignored label keeps its own
feature as "prototype" (IFV 1 on both sides, difference 0) and still counts in the mean.
Applied to: ``FEATURE`` (default ``decoder_features``, (V, C) rows of ``voxel_coords``), teacher and
student widths may differ (the map is channel-free); labels: each voxel's majority label of its
points (``point_labels`` via ``point_to_voxel``, the student head's own voxel labels). Choice: the
reference resizes the labels to the feature map; here voxels carry their own labels. The IFV
experiments (``kd_cfgs/methods/ifv.yaml``) add the recipe's pointwise KD term (``HintonKD``, weight 10).
"""
import torch
import torch.nn.functional as F

from pcdet.kd.keys import tea
from pcdet.kd.methods.base import KD_METHODS, KDMethod
from pcdet.kd.methods.common import student_map
from pcdet.kd.nodes import full_precision
from pcdet.models.seg_heads.cylinder_seg_head import voxel_majority_labels


def ifv_map(feat, labels, batch_idx, batch_size, ignore_label):
    """(V,) cos(f_i, prototype of its sample and class); 1 for voxels with the ignored label."""
    out = torch.ones(feat.shape[0], dtype=feat.dtype, device=feat.device)
    for b in range(batch_size):
        for c in torch.unique(labels[batch_idx == b]).tolist():
            if c == ignore_label:
                continue
            sel = (batch_idx == b) & (labels == c)
            proto = feat[sel].mean(dim=0, keepdim=True)
            out[sel] = F.cosine_similarity(feat[sel], proto.expand_as(feat[sel]), dim=1, eps=1e-8)
    return out


@KD_METHODS.register()
class IFV(KDMethod):
    """IFV (Wang et al.): MSE between teacher and student maps of cosine similarity to the class prototypes."""

    ALLOWED_KEYS = {"NAME", "WEIGHT", "FEATURE"}

    def __init__(self, cfg, student, teacher, where):
        super().__init__(cfg, where)
        self.require_segmentor(student, where, "IFV distils a segmentor's voxel features")
        self.feature = str(cfg.get("FEATURE", "decoder_features"))
        self.num_logits = int(student.num_logits)
        self.ignore_label = student.ignore_label

    def forward(self, batch_dict):
        fs = student_map(batch_dict, self.feature)
        ft = full_precision(batch_dict[tea(self.feature)].detach())
        if fs.shape[0] != ft.shape[0]:
            raise ValueError(f"{self.where}: {self.feature}: {fs.shape[0]} student vs {ft.shape[0]} teacher voxels")
        coords = batch_dict["voxel_coords"]
        labels = voxel_majority_labels(batch_dict["point_to_voxel"].long(), batch_dict["point_labels"].long(),
                                       coords.shape[0], self.num_logits)
        batch_idx, bs = coords[:, 0].long(), int(batch_dict["batch_size"])
        ms = ifv_map(fs, labels, batch_idx, bs, self.ignore_label)
        mt = ifv_map(ft, labels, batch_idx, bs, self.ignore_label)
        return self.weight * (ms - mt).pow(2).mean(), {}
