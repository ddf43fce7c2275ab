"""SECOND (Yan et al., Sensors 2018): MeanVFE -> VoxelBackBone8x (sparse 3D) -> HeightCompression ->
BaseBEVBackbone -> anchor head (OpenPCDet ``SECONDNet``). Configs: ``tools/cfgs/kitti_models/second*.yaml``."""
from pcdet.models.detectors.detector3d_template import Detector3DTemplate
from pcdet.models.registries import DETECTORS


@DETECTORS.register()
class SECONDNet(Detector3DTemplate):
    module_topology = ["vfe", "backbone_3d", "map_to_bev_module", "backbone_2d", "dense_head"]
