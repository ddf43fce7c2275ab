"""Single anchor head on the BEV map: 1x1 convs for class logits, box residuals and direction bins.

Reads ``spatial_features_2d`` (B, C, ny, nx) (C from the backbone, never from the config); in
training it also reads ``gt_boxes`` and stores targets for ``get_loss``; writes ``batch_cls_preds``
(B, A, num_class), ``batch_box_preds`` (B, A, 7), ``cls_preds_normalized`` (False) when boxes are
predicted, and the raw maps ``cls_preds``/``box_preds``/``dir_cls_preds`` (B, ny, nx, A*k) for KD.
"""
import numpy as np
import torch.nn as nn

from pcdet.config import check_keys
from pcdet.models.dense_heads.anchor_head_template import AnchorHeadTemplate
from pcdet.models.model_template import FeatureSpec
from pcdet.models.registries import DENSE_HEADS


@DENSE_HEADS.register()
class AnchorHeadSingle(AnchorHeadTemplate):
    ALLOWED_KEYS = {
        "NAME", "CLASS_AGNOSTIC", "USE_DIRECTION_CLASSIFIER", "DIR_OFFSET", "DIR_LIMIT_OFFSET", "NUM_DIR_BINS",
        "ANCHOR_GENERATOR_CONFIG", "TARGET_ASSIGNER_CONFIG", "LOSS_CONFIG",
    }

    def __init__(self, model_cfg, input_channels, num_class, class_names, grid_size, point_cloud_range,
                 predict_boxes_when_training=True, feature_map_stride=None, **kwargs):
        check_keys(model_cfg, self.ALLOWED_KEYS, "MODEL.DENSE_HEAD")
        super().__init__(model_cfg, num_class, class_names, grid_size, point_cloud_range, predict_boxes_when_training)
        self.feature_map_stride = feature_map_stride
        a = self.num_anchors_per_location_total
        self.conv_cls = nn.Conv2d(input_channels, a * self.num_class, kernel_size=1)
        self.conv_box = nn.Conv2d(input_channels, a * self.box_coder.code_size, kernel_size=1)
        if model_cfg.get("USE_DIRECTION_CLASSIFIER", False):
            self.conv_dir_cls = nn.Conv2d(input_channels, a * model_cfg.NUM_DIR_BINS, kernel_size=1)
        else:
            self.conv_dir_cls = None
        self.init_weights()

    def feature_specs(self, info):
        specs = {"cls_preds": FeatureSpec(self.conv_cls.out_channels, "head_map", stride=self.feature_map_stride),
                 "box_preds": FeatureSpec(self.conv_box.out_channels, "head_map", stride=self.feature_map_stride)}
        if self.conv_dir_cls is not None:
            specs["dir_cls_preds"] = FeatureSpec(self.conv_dir_cls.out_channels, "head_map",
                                                 stride=self.feature_map_stride)
        return specs

    def init_weights(self):
        pi = 0.01
        nn.init.constant_(self.conv_cls.bias, -np.log((1 - pi) / pi))
        nn.init.normal_(self.conv_box.weight, mean=0, std=0.001)

    def forward(self, data_dict):
        x = data_dict["spatial_features_2d"]
        cls_preds = self.conv_cls(x).permute(0, 2, 3, 1).contiguous()
        box_preds = self.conv_box(x).permute(0, 2, 3, 1).contiguous()
        self.forward_ret_dict["cls_preds"] = cls_preds
        self.forward_ret_dict["box_preds"] = box_preds
        data_dict["cls_preds"], data_dict["box_preds"] = cls_preds, box_preds
        dir_cls_preds = None
        if self.conv_dir_cls is not None:
            dir_cls_preds = self.conv_dir_cls(x).permute(0, 2, 3, 1).contiguous()
            self.forward_ret_dict["dir_cls_preds"] = dir_cls_preds
            data_dict["dir_cls_preds"] = dir_cls_preds
        if self.training:
            self.forward_ret_dict.update(self.assign_targets(gt_boxes=data_dict["gt_boxes"]))
        if not self.training or self.predict_boxes_when_training:
            batch_cls_preds, batch_box_preds = self.generate_predicted_boxes(
                batch_size=data_dict["batch_size"], cls_preds=cls_preds, box_preds=box_preds, dir_cls_preds=dir_cls_preds
            )
            data_dict["batch_cls_preds"] = batch_cls_preds
            data_dict["batch_box_preds"] = batch_box_preds
            data_dict["cls_preds_normalized"] = False
        return data_dict
