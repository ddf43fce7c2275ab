"""What every model family shares: the slot-by-slot builder, the feature-spec table, weight loading.

Owns :class:`Model3DTemplate` (the base of ``Detector3DTemplate`` and ``Segmentor3DTemplate``),
:class:`FeatureSpec`, :func:`load_model_weights`, :func:`check_state_dict_compatible` and
:class:`CheckpointMismatchError`.

Building. A family declares ``module_topology`` (slot names in build order) and, per slot, the
``MODEL`` section it is built from (:attr:`Model3DTemplate.SECTIONS`, default the slot name in upper
case); a slot's builder is ``build_<slot>(cfg, info)``, which picks the slot's registry. Modules are
built in topology order; each builder reads the channel counts and geometry the previous ones left
in ``info`` (the ``model_info_dict``: ``grid_size``,
``voxel_size``, ``point_cloud_range``, ``num_point_features``, ``num_bev_features``,
``feature_map_stride``, ...) and adds its own, so configs never state input widths. A ``MODEL``
section that the topology cannot build is an error naming the slots it can.

Feature specs. After building a module the template asks it for ``feature_specs(info)`` (optional):
``{batch_dict key: FeatureSpec}`` describing what it writes (channels, layout, coordinate key,
points-per-node key, stride). The union is :attr:`Model3DTemplate.feature_specs`; distillation reads
widths and layouts there instead of knowing module attributes.

Running. ``forward(batch_dict)`` = :meth:`extract_features` (the modules in order; the KD wrapper
runs exactly this for the teacher) then, in training, ``get_training_loss()`` -> ``({'loss': loss},
tb_dict, disp_dict)``, in evaluation ``post_processing(batch_dict)`` -> ``(pred_dicts, ret_dict)``.
The output contract of each family is in its template's docstring.
"""
import os
from dataclasses import dataclass

import torch
import torch.nn as nn

from pcdet.config import ConfigError
from pcdet.models.registries import BACKBONES_3D, VFES

#: layouts of the features a module writes
LAYOUTS = {
    "dense_bev": "(B, C, H, W) bird's-eye-view map; nodes are cells",
    "sparse_rows": "(V, C) one row per voxel / pillar; coord_key holds [batch, z, y, x] per row",
    "points": "(N, C) one row per point; coord_key holds [batch, x, y, z] per row",
    "sparse_tensor": "spconv SparseConvTensor (features (V, C), indices [batch, z, y, x])",
    "head_map": "(B, H, W, A * k) dense-head output, channel-last; the head's kd_view() splits it",
}
#: checkpoint keys of a buffer older versions kept (a step counter that was never updated)
LEGACY_KEYS = ("global_step",)


@dataclass(frozen=True)
class FeatureSpec:
    """What a module writes under one ``batch_dict`` key."""

    channels: int
    layout: str
    coord_key: str = None  # sparse_rows / points / sparse_tensor: where the node coordinates are
    count_key: str = None  # points per node (sparse_rows of voxels / pillars), else None
    stride: int = None  # dense_bev / head_map / sparse_tensor: stride w.r.t. the voxel grid

    def __post_init__(self):
        if self.layout not in LAYOUTS:
            raise ValueError(f"FeatureSpec layout {self.layout!r}: use one of {', '.join(LAYOUTS)}")


class CheckpointMismatchError(RuntimeError):
    """A checkpoint does not fit the model built from its config; names the first bad key."""


def _is_legacy(key):
    return key.rsplit(".", 1)[-1] in LEGACY_KEYS


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


def read_checkpoint(filename):
    """``(checkpoint dict, its model state)`` of a training checkpoint (``model_state``) or a bare state dict."""
    if not os.path.isfile(filename):
        raise FileNotFoundError(f"checkpoint not found: {filename}")
    ckpt = torch.load(filename, map_location="cpu", weights_only=False)
    state = ckpt.get("model_state", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict):
        raise CheckpointMismatchError(f"{filename}: not a checkpoint (expected a state dict or {{'model_state': ...}})")
    return ckpt, state


def load_model_weights(module, state, source, strict=True, logger=None, what="checkpoint"):
    """Check ``state`` against ``module`` (strictly by default) and load it. Keys of the legacy
    step counter (:data:`LEGACY_KEYS`) in older checkpoints are ignored."""
    state = {k: v for k, v in state.items() if not _is_legacy(k)}
    check_state_dict_compatible(module.state_dict(), state, source, strict=strict)
    module.load_state_dict(state, strict=strict)
    if logger is not None:
        logger.info(f"loaded {len(state)} tensors ({what}) from {source}")
    return state


class Model3DTemplate(nn.Module):
    """Base of every model family; see the module docstring."""

    #: "detector" or "segmentor" (set by the family template)
    family = None
    #: slot names in build order
    module_topology = []
    #: slot -> MODEL section it is built from (default: the slot name in upper case)
    SECTIONS = {}
    #: MODEL keys that are not module sections
    EXTRA_KEYS = {"NAME", "BN_MOMENTUM"}

    def __init__(self, model_cfg, num_class, dataset):
        super().__init__()
        self.model_cfg = model_cfg
        self.num_class = num_class
        self.dataset = dataset
        self.class_names = list(dataset.class_names)
        self.feature_specs = {}
        self.module_list = self.build_networks()
        self.set_bn_momentum(model_cfg.get("BN_MOMENTUM", None))

    @classmethod
    def section_of(cls, slot):
        return cls.SECTIONS.get(slot, slot.upper())

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
        """``"TRAIN"`` / ``"TEST"``: the keys of OpenPCDet's per-mode model configs (e.g. ``NMS_CONFIG``);
        datasets and processors use ``"train"`` / ``"test"``, the keys of ``DATA_SPLIT``."""
        return "TRAIN" if self.training else "TEST"

    # ------------------------------------------------------------ building
    def initial_model_info(self):
        """What the first module may read: the dataset's point features and voxel geometry."""
        processor = self.dataset.data_processor
        return {
            "module_list": [],
            "num_rawpoint_features": self.dataset.point_feature_encoder.num_point_features,
            "num_point_features": self.dataset.point_feature_encoder.num_point_features,
            "grid_size": processor.grid_size,
            "point_cloud_range": processor.point_cloud_range,
            "voxel_size": processor.voxel_size,
            "feature_specs": {},
        }

    def build_networks(self):
        sections = {self.section_of(slot): slot for slot in self.module_topology}
        for key in self.model_cfg:
            if key not in sections and key not in self.EXTRA_KEYS:
                raise ConfigError(
                    f"MODEL: unknown section {key!r}; {type(self).__name__} builds "
                    f"{', '.join(self.section_of(s) for s in self.module_topology)} (topology {self.module_topology})"
                )
        info = self.initial_model_info()
        for slot in self.module_topology:
            builder = getattr(self, f"build_{slot}", None)
            if builder is None:
                raise ConfigError(f"{type(self).__name__}: no builder for slot {slot!r} (define build_{slot})")
            module, info = builder(self.model_cfg.get(self.section_of(slot), None), info)
            if module is not None:
                self.add_module(slot, module)
                specs = getattr(module, "feature_specs", None)
                if callable(specs):
                    info["feature_specs"].update(specs(info))
        self.feature_specs = dict(info["feature_specs"])
        self.model_info = {k: v for k, v in info.items() if k not in ("module_list", "feature_specs")}
        return info["module_list"]

    # the point / voxel encoder and the 3D backbone: slots every family may have
    def build_vfe(self, cfg, info):
        if cfg is None:
            return None, info
        m = self.build_module(VFES, cfg, "vfe", info, num_point_features=info["num_rawpoint_features"],
                              point_cloud_range=info["point_cloud_range"], voxel_size=info["voxel_size"],
                              grid_size=info["grid_size"])
        info["num_point_features"] = m.get_output_feature_dim()
        return m, info

    def build_backbone_3d(self, cfg, info):
        if cfg is None:
            return None, info
        m = self.build_module(BACKBONES_3D, cfg, "backbone_3d", info, input_channels=info["num_point_features"],
                              grid_size=info["grid_size"], voxel_size=info["voxel_size"],
                              point_cloud_range=info["point_cloud_range"])
        info["num_point_features"] = m.num_point_features
        info["backbone_channels"] = getattr(m, "backbone_channels", None)
        return m, info

    def build_module(self, registry, cfg, slot, info, **kwargs):
        """Build ``cfg`` from ``registry`` (``where`` names the MODEL section) and append it to the
        module list; returns the module."""
        where = f"MODEL.{self.section_of(slot)}"
        module = registry.get(cfg.get("NAME", None), where)(model_cfg=cfg, **kwargs)
        info["module_list"].append(module)
        return module

    # ------------------------------------------------------------ running
    def extract_features(self, batch_dict):
        """Every module in order: everything up to the losses and the post-processing."""
        for module in self.module_list:
            batch_dict = module(batch_dict)
        return batch_dict

    def forward(self, batch_dict):
        batch_dict = self.extract_features(batch_dict)
        if self.training:
            loss, tb_dict, disp_dict = self.get_training_loss()
            return {"loss": loss}, tb_dict, disp_dict
        return self.post_processing(batch_dict)

    def get_training_loss(self):  # family-specific
        raise NotImplementedError(f"{type(self).__name__} must define get_training_loss")

    def post_processing(self, batch_dict):  # family-specific
        raise NotImplementedError(f"{type(self).__name__} must define post_processing")

    # ------------------------------------------------------------ checkpoints
    def load_params_from_file(self, filename, logger=None, strict=True):
        """Load model weights from a training checkpoint (``model_state``) or a bare state dict."""
        ckpt, state = read_checkpoint(filename)
        load_model_weights(self, state, filename, strict=strict, logger=logger)
        return ckpt
