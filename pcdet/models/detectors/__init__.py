"""Detectors, registered by ``MODEL.NAME``; each is a thin composition over Detector3DTemplate."""
from pcdet.models.detectors.detector3d_template import Detector3DTemplate
from pcdet.models.detectors.pointpillar import PointPillar

__all__ = {"Detector3DTemplate": Detector3DTemplate, "PointPillar": PointPillar}


def build_detector(model_cfg, num_class, dataset):
    if model_cfg.NAME not in __all__:
        raise ValueError(f"MODEL.NAME={model_cfg.NAME!r} is not registered; known: {sorted(__all__)}")
    return __all__[model_cfg.NAME](model_cfg=model_cfg, num_class=num_class, dataset=dataset)
