"""Segmentor3DTemplate: the LiDAR semantic-segmentation family on :class:`Model3DTemplate`.

Slots, in build order, and the ``MODEL`` section each is built from: ``vfe`` (VFE: point or voxel
feature encoder), ``backbone_3d`` (BACKBONE_3D: sparse / point / range network), ``seg_head``
(SEG_HEAD: per-point, optionally per-voxel, classifier); a segmentor lists the slots it uses in
``module_topology``. Each builder gets the widths of the previous modules from the
``model_info_dict`` as the detectors' do.

``batch_dict`` contract (N = points in the batch, V = voxels, K = number of classes):

=====================  ============  ===============================================================
key                    shape         written by
=====================  ============  ===============================================================
points                 (N, 1 + C)    collate: [batch index, x, y, z, features...]
point_labels           (N,) int      dataset (training and evaluation): the class index of each point
point_logits           (N, K)        the seg head: class scores of every point of ``points``
voxel_logits           (V, K)        the seg head, optional: class scores per voxel of ``voxel_coords``
=====================  ============  ===============================================================

Ignored class. A dataset that declares ``IGNORE_LABEL`` (SemanticKITTI: 0 = unlabeled) has labels
0..len(CLASS_NAMES) with that one ignored by the losses and the metric; the head then gets
``num_class = len(CLASS_NAMES) + 1`` logits (the ignored one included, as Cylinder3D's 20 outputs) and
``ignore_index``, and predictions never take the ignored class (its logit is skipped in the argmax).
Without ``IGNORE_LABEL`` labels are 0..K-1, K = len(CLASS_NAMES), all scored.

Training: ``seg_head.get_loss() -> (loss, tb_dict)``; :meth:`get_training_loss` sums the losses of
the heads present. Evaluation: :meth:`post_processing` returns one dict per sample,
``{"point_logits": (N_b, K), "point_labels": (N_b,) argmax class}`` (plus ``voxel_logits`` when
the head wrote them), and an empty ``ret_dict``; the dataset's evaluator (a confusion matrix for
mIoU) consumes them.
"""
import torch

from pcdet.models.model_template import Model3DTemplate
from pcdet.models.registries import SEG_HEADS


class Segmentor3DTemplate(Model3DTemplate):
    """Base of the segmentors: point-feature slots, a segmentation head, per-point predictions."""

    family = "segmentor"
    module_topology = ["vfe", "backbone_3d", "seg_head"]
    EXTRA_KEYS = {"NAME", "BN_MOMENTUM"}

    # build_vfe / build_backbone_3d: Model3DTemplate
    @property
    def ignore_label(self):
        """The dataset's ignored label (None: every label is a class)."""
        return getattr(self.dataset, "IGNORE_LABEL", None)

    @property
    def num_logits(self):
        """Columns of the heads' logits: the classes, plus the ignored label when the dataset has one."""
        return self.num_class + (0 if self.ignore_label is None else 1)

    def build_seg_head(self, cfg, info):
        if cfg is None:
            return None, info
        m = self.build_module(SEG_HEADS, cfg, "seg_head", info, input_channels=info["num_point_features"],
                              num_class=self.num_logits, ignore_index=self.ignore_label,
                              class_names=self.class_names, feature_specs=info["feature_specs"])
        return m, info

    def get_training_loss(self):
        loss, tb_dict = 0.0, {}
        head = getattr(self, "seg_head", None)
        if head is None:
            raise RuntimeError(f"{type(self).__name__}: training needs a seg_head")
        head_loss, head_tb = head.get_loss()
        loss = loss + head_loss
        tb_dict.update(head_tb)
        return loss, tb_dict, {}

    def predict_labels(self, logits):
        """Argmax class of each row of ``logits``, never the ignored label."""
        if logits.shape[0] == 0:
            return torch.zeros(0, dtype=torch.long, device=logits.device)
        if self.ignore_label is not None:
            logits = logits.clone()
            logits[:, self.ignore_label] = float("-inf")
        return torch.argmax(logits, dim=1)

    def post_processing(self, batch_dict):
        logits = batch_dict["point_logits"]
        batch_idx = batch_dict["points"][:, 0].long()
        voxel_logits = batch_dict.get("voxel_logits", None)
        pred_dicts = []
        for b in range(int(batch_dict["batch_size"])):
            sel = batch_idx == b
            pl = logits[sel]
            pred = {"point_logits": pl, "point_labels": self.predict_labels(pl)}
            if voxel_logits is not None:
                pred["voxel_logits"] = voxel_logits[batch_dict["voxel_coords"][:, 0].long() == b]
            pred_dicts.append(pred)
        return pred_dicts, {}
