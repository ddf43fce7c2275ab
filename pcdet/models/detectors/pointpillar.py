"""PointPillars (Lang et al., CVPR'19): PillarVFE -> PointPillarScatter -> BaseBEVBackbone -> anchor head."""
from pcdet.models.detectors.detector3d_template import Detector3DTemplate
from pcdet.models.registries import DETECTORS


@DETECTORS.register()
class PointPillar(Detector3DTemplate):
    module_topology = ["vfe", "map_to_bev_module", "backbone_2d", "dense_head"]
