"""Models: two families on one base (:mod:`pcdet.models.model_template`), built from registries.

* detectors (``detectors/``: :class:`Detector3DTemplate` + thin detectors) assembled from VFEs,
  3D / 2D backbones, BEV mappings and heads (``backbones_3d/vfe``, ``backbones_2d``,
  ``dense_heads``);
* segmentors (``segmentors/``: :class:`Segmentor3DTemplate` + thin segmentors) assembled from point /
  voxel encoders, 3D backbones and segmentation heads (``seg_heads``): per-point class scores.

``build_model(model_cfg, num_class, dataset, kd_cfg=None)`` is the single entry point: it looks
``MODEL.NAME`` up in the family registries (:mod:`pcdet.models.registries`) and, with the ``KD``
section of a config, returns :class:`pcdet.kd.wrapper.DistillationWrapper` (student + frozen teacher
+ KD methods). ``build_network`` is the same function under OpenPCDet's name.
"""
import numpy as np
import torch

# importing the subpackages registers their modules
from pcdet.models import backbones_2d, backbones_3d, dense_heads, detectors, seg_heads, segmentors  # noqa: F401
from pcdet.models.backbones_2d import map_to_bev  # noqa: F401
from pcdet.models.backbones_3d import vfe  # noqa: F401
from pcdet.models.registries import FAMILIES
from pcdet.utils.registry import UnknownNameError

_NON_TENSOR_KEYS = {"frame_id", "metadata", "calib", "image_shape", "batch_size", "use_lead_xyz", "image_paths"}


def family_of(model_cfg):
    """``"detector"`` or ``"segmentor"``: the family whose registry holds ``MODEL.NAME``."""
    name = model_cfg.get("NAME", None)
    for family, registry in FAMILIES.items():
        if name in registry:
            return family
    known = "; ".join(f"{family}s: {', '.join(reg.names()) or 'none'}" for family, reg in FAMILIES.items())
    raise UnknownNameError(f"MODEL.NAME: unknown model {name!r}; {known}")


def build_model(model_cfg, num_class, dataset, kd_cfg=None):
    """The model of ``model_cfg`` (its family from ``MODEL.NAME``); with a ``KD`` section, the
    distillation wrapper around it."""
    if kd_cfg is not None:
        from pcdet.kd.wrapper import build_kd_network

        return build_kd_network(model_cfg, num_class, dataset, kd_cfg)
    cls = FAMILIES[family_of(model_cfg)].get(model_cfg.NAME)
    return cls(model_cfg=model_cfg, num_class=num_class, dataset=dataset)


build_network = build_model


def load_data_to_device(batch_dict, device):
    """Move the numpy arrays of a collated batch onto ``device`` as tensors (in place)."""
    for key, val in batch_dict.items():
        if key in _NON_TENSOR_KEYS or not isinstance(val, np.ndarray):
            continue
        if key in ("voxel_coords", "voxel_num_points") or np.issubdtype(val.dtype, np.integer):
            batch_dict[key] = torch.from_numpy(val).long().to(device)
        else:
            batch_dict[key] = torch.from_numpy(val).float().to(device)
    return batch_dict
