"""Cylinder3D (Zhu et al., "Cylindrical and Asymmetrical 3D Convolution Networks for LiDAR
Segmentation", CVPR 2021): cylindrical partition (a ``DATA_PROCESSOR`` step) -> point MLP with
per-voxel max pooling (``VFE: CylinderPointVFE``) -> asymmetric 3D sparse UNet with DDCM
(``BACKBONE_3D: Asymm3DUNet``) -> sparse voxel logits + point refinement, CE + Lovasz
(``SEG_HEAD: CylinderSegHead``). Configs: ``tools/cfgs/semantickitti_models/cylinder3d*.yaml``
(paper scale) and ``tools/cfgs/synthetic_seg_models/`` (CPU scale)."""
from pcdet.models.registries import SEGMENTORS
from pcdet.models.segmentors.segmentor3d_template import Segmentor3DTemplate


@SEGMENTORS.register("Cylinder3D")
class Cylinder3D(Segmentor3DTemplate):
    module_topology = ["vfe", "backbone_3d", "seg_head"]
