"""Modules that turn voxel/pillar features into a BEV feature map (registry:
:data:`pcdet.models.registries.MAP_TO_BEV`)."""
from pcdet.models.backbones_2d.map_to_bev.height_compression import HeightCompression
from pcdet.models.backbones_2d.map_to_bev.pointpillar_scatter import PointPillarScatter

__all__ = ["HeightCompression", "PointPillarScatter"]
