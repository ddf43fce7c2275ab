"""Detector3DTemplate: builds a detector from ``MODEL`` config sections in a fixed topology.

Modules are built in ``module_topology`` order; each builder reads the channel counts and geometry
produced by the previous ones from ``model_info_dict`` (so configs never state input widths) and
adds its own. ``forward`` runs the modules in order on a shared ``batch_dict``.

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
import os

import torch
import torch.nn as nn

from pcdet.models import backbones_2d, backbones_3d, dense_heads
from pcdet.models.backbones_2d import map_to_bev
from pcdet.models.backbones_3d import vfe
from pcdet.models.model_utils import model_nms_utils


class CheckpointMismatchError(RuntimeError):
    """A checkpoint does not fit the model built from its config; names the first bad key."""


def check_state_dict_compatible(model_state, ckpt_state, source, strict=True):
    """Raise :class:`CheckpointMismatchError` naming the first missing/unexpected/mis-shaped key."""
    for key, val in ckpt_state.items():
        if key in model_state and tuple(model_state[key].shape) != tuple(val.shape):
            raise CheckpointMismatchError(
                f"{source}: shape mismatch at {key!r}: checkpoint {tuple(val.shape)} vs model "
                f"{tuple(model_state[key].shape)} (was the checkpoint trained with another config?)"
            )
    if strict:
        missing = [k for k in model_state if k not in ckpt_state]
        unexpected = [k for k in ckpt_state if k not in model_state]
        if missing:
            raise CheckpointMismatchError(f"{source}: key {missing[0]!r} missing from the checkpoint ({len(missing)} missing)")
        if unexpected:
            raise CheckpointMismatchError(
                f"{source}: unexpected key {unexpected[0]!r} in the checkpoint ({len(unexpected)} unexpected)"
            )


class Detector3DTemplate(nn.Module):
    module_topology = ["vfe", "backbone_3d", "map_to_bev_module", "backbone_2d", "dense_head"]

    def __init__(self, model_cfg, num_class, dataset):
        super().__init__()
        self.model_cfg = model_cfg
        self.num_class = num_class
        self.dataset = dataset
        self.class_names = dataset.class_names
        self.register_buffer("global_step", torch.LongTensor(1).zero_())
        self.module_list = self.build_networks()
        self.set_bn_momentum(model_cfg.get("BN_MOMENTUM", None))

    def set_bn_momentum(self, momentum):
        """Override the BatchNorm momentum of every layer (``MODEL.BN_MOMENTUM``; None keeps each
        layer's own, 0.01 as in OpenPCDet). Short schedules need a faster one (e.g. 0.1): with 0.01
        the running statistics after a few hundred steps are still far from the batch statistics
        and inference in eval mode degrades."""
        if momentum is None:
            return
        for module in self.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.momentum = float(momentum)

    @property
    def mode(self):
        return "TRAIN" if self.training else "TEST"

    def update_global_step(self):
        self.global_step += 1

    # ------------------------------------------------------------ building
    def build_networks(self):
        processor = self.dataset.data_processor
        info = {
            "module_list": [],
            "num_rawpoint_features": self.dataset.point_feature_encoder.num_point_features,
            "num_point_features": self.dataset.point_feature_encoder.num_point_features,
            "grid_size": processor.grid_size,
            "point_cloud_range": processor.point_cloud_range,
            "voxel_size": processor.voxel_size,
        }
        known = set(self.module_topology) | {"NAME", "POST_PROCESSING", "BN_MOMENTUM"}
        section_of = {"map_to_bev_module": "MAP_TO_BEV"}
        for key in self.model_cfg:
            if key not in known and key.lower() not in self.module_topology and key != "MAP_TO_BEV":
                raise ValueError(f"MODEL: unknown section {key!r}; this detector builds {self.module_topology}")
        for name in self.module_topology:
            section = section_of.get(name, name.upper())
            module, info = getattr(self, f"build_{name}")(self.model_cfg.get(section, None), info)
            if module is not None:
                self.add_module(name, module)
        return info["module_list"]

    @staticmethod
    def _lookup(registry, cfg, section):
        if cfg.NAME not in registry:
            raise ValueError(f"MODEL.{section}.NAME={cfg.NAME!r} is not registered; known: {sorted(registry)}")
        return registry[cfg.NAME]

    def build_vfe(self, cfg, info):
        if cfg is None:
            return None, info
        cls = self._lookup(vfe.__all__, cfg, "VFE")
        m = cls(model_cfg=cfg, num_point_features=info["num_rawpoint_features"], point_cloud_range=info["point_cloud_range"],
                voxel_size=info["voxel_size"], grid_size=info["grid_size"])
        info["num_point_features"] = m.get_output_feature_dim()
        info["module_list"].append(m)
        return m, info

    def build_backbone_3d(self, cfg, info):
        if cfg is None:
            return None, info
        cls = self._lookup(backbones_3d.__all__, cfg, "BACKBONE_3D")
        m = cls(model_cfg=cfg, input_channels=info["num_point_features"], grid_size=info["grid_size"],
                voxel_size=info["voxel_size"], point_cloud_range=info["point_cloud_range"])
        info["num_point_features"] = m.num_point_features
        info["backbone_channels"] = getattr(m, "backbone_channels", None)
        info["module_list"].append(m)
        return m, info

    def build_map_to_bev_module(self, cfg, info):
        if cfg is None:
            return None, info
        cls = self._lookup(map_to_bev.__all__, cfg, "MAP_TO_BEV")
        m = cls(model_cfg=cfg, grid_size=info["grid_size"], num_point_features=info["num_point_features"])
        info["num_bev_features"] = m.num_bev_features
        info["module_list"].append(m)
        return m, info

    def build_backbone_2d(self, cfg, info):
        if cfg is None:
            return None, info
        cls = self._lookup(backbones_2d.__all__, cfg, "BACKBONE_2D")
        m = cls(model_cfg=cfg, input_channels=info.get("num_bev_features"))
        info["num_bev_features"] = m.num_bev_features
        info["module_list"].append(m)
        return m, info

    def build_dense_head(self, cfg, info):
        if cfg is None:
            return None, info
        cls = self._lookup(dense_heads.__all__, cfg, "DENSE_HEAD")
        m = cls(model_cfg=cfg, input_channels=info["num_bev_features"],
                num_class=self.num_class if not cfg.get("CLASS_AGNOSTIC", False) else 1,
                class_names=self.class_names, grid_size=info["grid_size"], point_cloud_range=info["point_cloud_range"],
                predict_boxes_when_training=self.model_cfg.get("ROI_HEAD", False) is not False)
        info["module_list"].append(m)
        return m, info

    # ------------------------------------------------------------ running
    def forward(self, batch_dict):
        for module in self.module_list:
            batch_dict = module(batch_dict)
        if self.training:
            loss, tb_dict, disp_dict = self.get_training_loss()
            return {"loss": loss}, tb_dict, disp_dict
        return self.post_processing(batch_dict)

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
        from pcdet.ops.iou3d_nms import boxes_iou3d_cpu

        if "gt_boxes" not in data_dict:
            return recall_dict
        if not recall_dict:
            recall_dict = {"gt": 0}
            for t in thresh_list:
                recall_dict[f"recall_{t}"] = 0
        gt = data_dict["gt_boxes"][batch_index]
        gt = gt[gt[:, -1] > 0] if gt.shape[0] > 0 else gt
        if gt.shape[0] > 0 and box_preds.shape[0] > 0:
            iou = boxes_iou3d_cpu(box_preds[:, 0:7].detach().cpu(), gt[:, 0:7].detach().cpu())
            best = iou.max(dim=0)[0]
            for t in thresh_list:
                recall_dict[f"recall_{t}"] += int((best > t).sum().item())
        recall_dict["gt"] += int(gt.shape[0])
        return recall_dict

    # ------------------------------------------------------------ checkpoints
    def load_params_from_file(self, filename, logger=None, strict=True):
        """Load model weights from a training checkpoint (``model_state``) or a bare state dict."""
        if not os.path.isfile(filename):
            raise FileNotFoundError(f"checkpoint not found: {filename}")
        ckpt = torch.load(filename, map_location="cpu", weights_only=False)
        state = ckpt.get("model_state", ckpt)
        check_state_dict_compatible(self.state_dict(), state, filename, strict=strict)
        self.load_state_dict(state, strict=strict)
        if logger is not None:
            logger.info(f"loaded {len(state)} tensors from {filename}")
        return ckpt
