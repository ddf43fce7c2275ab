"""Detectors, registered by ``MODEL.NAME`` in :data:`pcdet.models.registries.DETECTORS`; each is a thin
composition over :class:`Detector3DTemplate` (its ``module_topology``)."""
from pcdet.models.detectors.detector3d_template import Detector3DTemplate
from pcdet.models.detectors.pointpillar import PointPillar
from pcdet.models.detectors.second_net import SECONDNet
from pcdet.models.registries import DETECTORS

__all__ = ["Detector3DTemplate", "PointPillar", "SECONDNet", "build_detector"]


def build_detector(model_cfg, num_class, dataset):
    """The detector registered as ``MODEL.NAME``."""
    return DETECTORS.get(model_cfg.NAME, "MODEL.NAME")(model_cfg=model_cfg, num_class=num_class, dataset=dataset)
