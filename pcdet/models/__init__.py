"""Models: detectors (``detectors/``) assembled from VFEs, 3D/2D backbones and heads.

``build_network(model_cfg, num_class, dataset, kd_cfg=None)`` is the single entry point; with the
``KD`` section of a config it returns :class:`pcdet.kd.wrapper.DistillationWrapper` (student +
frozen teacher + KD methods).
"""
import numpy as np
import torch

from pcdet.models.detectors import build_detector

_NON_TENSOR_KEYS = {"frame_id", "metadata", "calib", "image_shape", "batch_size", "use_lead_xyz", "image_paths"}


def build_network(model_cfg, num_class, dataset, kd_cfg=None):
    """The detector of ``model_cfg``; with a ``KD`` section, the distillation wrapper around it."""
    if kd_cfg is not None:
        from pcdet.kd.wrapper import build_kd_network

        return build_kd_network(model_cfg, num_class, dataset, kd_cfg)
    return build_detector(model_cfg=model_cfg, num_class=num_class, dataset=dataset)


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
