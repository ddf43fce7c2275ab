"""LiDAR semantic segmentors, registered in :data:`pcdet.models.registries.SEGMENTORS` by ``MODEL.NAME``;
each is a thin composition over :class:`Segmentor3DTemplate` (its ``module_topology``): Cylinder3D
(MinkUNet and SPVCNN follow)."""
from pcdet.models.registries import SEGMENTORS
from pcdet.models.segmentors.cylinder3d import Cylinder3D
from pcdet.models.segmentors.segmentor3d_template import Segmentor3DTemplate

__all__ = ["Segmentor3DTemplate", "Cylinder3D", "build_segmentor"]


def build_segmentor(model_cfg, num_class, dataset):
    """The segmentor registered as ``MODEL.NAME``."""
    return SEGMENTORS.get(model_cfg.NAME, "MODEL.NAME")(model_cfg=model_cfg, num_class=num_class, dataset=dataset)
