"""Detector3DTemplate: the detector family on :class:`pcdet.models.model_template.Model3DTemplate`.

Slots, in build order, and the ``MODEL`` section each is built from: ``vfe`` (VFE), ``backbone_3d``
(BACKBONE_3D), ``map_to_bev_module`` (MAP_TO_BEV), ``pfe`` (PFE), ``backbone_2d`` (BACKBONE_2D),
``dense_head`` (DENSE_HEAD), ``point_head`` (POINT_HEAD), ``roi_head`` (ROI_HEAD); a detector
lists the slots it uses in ``module_topology`` (PointPillars: vfe, map_to_bev_module, backbone_2d,
dense_head). Each builder reads the channel counts and geometry of the previous ones from the
``model_info_dict`` (so configs never state input widths); heads get ``voxel_size`` and the
``feature_map_stride`` of the map they read. ``forward`` = ``extract_features`` (the modules in
order on a shared ``batch_dict``) then the losses or the post-processing.

``batch_dict`` contract (B = batch size, V = voxels/pillars in the batch, P = points per voxel):

=========================  ======================  ==================================================
key                        shape                   written by
=========================  ======================  ==================================================
points                     (N, 1 + C) float        dataset collate: [batch_idx, x, y, z, intensity...]
voxels                     (V, P, C) float         data processor (transform_points_to_voxels)
voxel_num_points           (V,) int                data processor
voxel_coords               (V, 4) int              data processor + collate: [batch_idx, z, y, x]
gt_boxes                   (B, M, 8) float         dataset collate: LiDAR box + 1-based class index
batch_size                 int                     collate
pillar_features            (V, C_vfe)              PillarVFE
spatial_features           (B, C_vfe, ny, nx)      PointPillarScatter
spatial_features_<s>x      (B, C_i, ny/s, nx/s)    BaseBEVBackbone, one per stage (s = stride)
spatial_features_2d        (B, C_bev, ny', nx')    BaseBEVBackbone
cls_preds / box_preds /    (B, ny', nx', A*k)      dense head, raw maps (used by distillation)
dir_cls_preds
batch_cls_preds            (B, A, num_class)       dense head (logits; ``cls_preds_normalized`` False)
batch_box_preds            (B, A, 7)               dense head (decoded LiDAR boxes)
=========================  ======================  ==================================================

Inference ends in :meth:`post_processing` -> list (per sample) of ``pred_boxes`` (K, 7),
``pred_scores`` (K,), ``pred_labels`` (K,) 1-based, plus a recall dict.
"""
import torch

from pcdet.models.model_template import (  # noqa: F401  (re-exported: the errors' historical home)
    CheckpointMismatchError,
    FeatureSpec,
    Model3DTemplate,
    check_state_dict_compatible,
)
from pcdet.models.model_utils import model_nms_utils
from pcdet.models.registries import BACKBONES_2D, DENSE_HEADS, MAP_TO_BEV, PFE, POINT_HEADS, ROI_HEADS


class Detector3DTemplate(Model3DTemplate):
    """Base of the detectors: the OpenPCDet slots, box losses, NMS post-processing and recall."""

    family = "detector"
    module_topology = ["vfe", "backbone_3d", "map_to_bev_module", "pfe", "backbone_2d", "dense_head", "point_head",
                       "roi_head"]
    SECTIONS = {"map_to_bev_module": "MAP_TO_BEV"}
    EXTRA_KEYS = {"NAME", "BN_MOMENTUM", "POST_PROCESSING"}

    # ------------------------------------------------------------ building (one builder per slot)
    # build_vfe / build_backbone_3d: Model3DTemplate
    def build_map_to_bev_module(self, cfg, info):
        if cfg is None:
            return None, info
        m = self.build_module(MAP_TO_BEV, cfg, "map_to_bev_module", info, grid_size=info["grid_size"],
                              num_point_features=info["num_point_features"])
        info["num_bev_features"] = m.num_bev_features
        # stride of the BEV map w.r.t. the voxel grid (1 for scattered pillars, 8 for SECOND's height compression)
        info["feature_map_stride"] = int(getattr(m, "bev_stride", 1))
        return m, info

    def build_pfe(self, cfg, info):
        if cfg is None:
            return None, info
        m = self.build_module(PFE, cfg, "pfe", info, voxel_size=info["voxel_size"],
                              point_cloud_range=info["point_cloud_range"],
                              num_bev_features=info.get("num_bev_features"),
                              num_rawpoint_features=info["num_rawpoint_features"],
                              backbone_channels=info.get("backbone_channels"))
        info["num_point_features"] = m.num_point_features
        info["num_point_features_before_fusion"] = getattr(m, "num_point_features_before_fusion", None)
        return m, info

    def build_backbone_2d(self, cfg, info):
        if cfg is None:
            return None, info
        m = self.build_module(BACKBONES_2D, cfg, "backbone_2d", info, input_channels=info.get("num_bev_features"),
                              input_stride=info.get("feature_map_stride", 1))
        info["num_bev_features"] = m.num_bev_features
        stride = info.get("feature_map_stride", 1) * getattr(m, "output_stride", 1)
        info["feature_map_stride"] = int(stride) if float(stride).is_integer() else stride
        return m, info

    def build_dense_head(self, cfg, info):
        if cfg is None:
            return None, info
        m = self.build_module(DENSE_HEADS, cfg, "dense_head", info, input_channels=info["num_bev_features"],
                              num_class=self.num_class if not cfg.get("CLASS_AGNOSTIC", False) else 1,
                              class_names=self.class_names, grid_size=info["grid_size"],
                              point_cloud_range=info["point_cloud_range"], voxel_size=info["voxel_size"],
                              feature_map_stride=info.get("feature_map_stride", 1),
                              predict_boxes_when_training=self.model_cfg.get("ROI_HEAD", None) is not None)
        return m, info

    def build_point_head(self, cfg, info):
        if cfg is None:
            return None, info
        channels = info.get("num_point_features_before_fusion") or info["num_point_features"]
        m = self.build_module(POINT_HEADS, cfg, "point_head", info, input_channels=channels,
                              num_class=self.num_class if not cfg.get("CLASS_AGNOSTIC", False) else 1,
                              predict_boxes_when_training=self.model_cfg.get("ROI_HEAD", None) is not None)
        return m, info

    def build_roi_head(self, cfg, info):
        if cfg is None:
            return None, info
        m = self.build_module(ROI_HEADS, cfg, "roi_head", info, input_channels=info["num_point_features"],
                              backbone_channels=info.get("backbone_channels"),
                              point_cloud_range=info["point_cloud_range"], voxel_size=info["voxel_size"],
                              num_class=self.num_class if not cfg.get("CLASS_AGNOSTIC", False) else 1)
        return m, info

    # ------------------------------------------------------------ running (forward: Model3DTemplate)
    def get_training_loss(self):
        """Sum of the losses of the heads present; each head returns ``(loss, tb_dict)``."""
        loss, tb_dict = 0.0, {}
        for name in ("dense_head", "point_head", "roi_head"):
            head = getattr(self, name, None)
            if head is not None:
                head_loss, head_tb = head.get_loss()
                loss = loss + head_loss
                tb_dict.update(head_tb)
        return loss, tb_dict, {}

    def post_processing(self, batch_dict):
        """Score threshold + rotated NMS per sample; recall bookkeeping against ``gt_boxes`` if present."""
        pp = self.model_cfg.POST_PROCESSING
        batch_size = batch_dict["batch_size"]
        recall_dict, pred_dicts = {}, []
        for index in range(batch_size):
            box_preds = batch_dict["batch_box_preds"][index]
            cls_preds = batch_dict["batch_cls_preds"][index]
            if not batch_dict.get("cls_preds_normalized", False):
                cls_preds = torch.sigmoid(cls_preds)
            if pp.NMS_CONFIG.get("MULTI_CLASSES_NMS", False):
                scores, labels, boxes = model_nms_utils.multi_classes_nms(
                    cls_preds, box_preds, pp.NMS_CONFIG, score_thresh=pp.SCORE_THRESH
                )
                labels = labels + 1
            else:
                cls_max, label_preds = torch.max(cls_preds, dim=-1)
                idx, scores = model_nms_utils.class_agnostic_nms(cls_max, box_preds, pp.NMS_CONFIG, pp.SCORE_THRESH)
                labels, boxes = label_preds[idx] + 1, box_preds[idx]
            recall_dict = self.generate_recall_record(boxes, recall_dict, index, batch_dict, pp.RECALL_THRESH_LIST)
            pred_dicts.append({"pred_boxes": boxes, "pred_scores": scores, "pred_labels": labels})
        return pred_dicts, recall_dict

    @staticmethod
    def generate_recall_record(box_preds, recall_dict, batch_index, data_dict, thresh_list):
        """Count GT boxes and, per 3D-IoU threshold, GT boxes covered by some prediction."""
        from pcdet.ops.iou3d_nms import boxes_iou3d

        if "gt_boxes" not in data_dict:
            return recall_dict
        if not recall_dict:
            recall_dict = {"gt": 0}
            for t in thresh_list:
                recall_dict[f"recall_{t}"] = 0
        gt = data_dict["gt_boxes"][batch_index]
        gt = gt[gt[:, -1] > 0] if gt.shape[0] > 0 else gt
        if gt.shape[0] > 0 and box_preds.shape[0] > 0:
            iou = boxes_iou3d(box_preds[:, 0:7].detach(), gt[:, 0:7].detach())  # on the boxes' device
            best = iou.max(dim=0)[0]
            for t in thresh_list:
                recall_dict[f"recall_{t}"] += int((best > t).sum().item())
        recall_dict["gt"] += int(gt.shape[0])
        return recall_dict
