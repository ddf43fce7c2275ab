"""Voxel feature encoders, registered in :data:`pcdet.models.registries.VFES` by ``MODEL.VFE.NAME``.

Each encoder reads its inputs (pillars and SECOND's voxels: ``voxels``/``voxel_num_points``/``voxel_coords``; Cylinder3D's
point MLP: the cylindrical partition's point keys) and exposes
``get_output_feature_dim()`` so the next module is built with the right width.
"""
from pcdet.models.backbones_3d.vfe.cylinder_vfe import CylinderPointVFE
from pcdet.models.backbones_3d.vfe.mean_vfe import MeanVFE
from pcdet.models.backbones_3d.vfe.pillar_vfe import PillarVFE

__all__ = ["CylinderPointVFE", "MeanVFE", "PillarVFE"]
