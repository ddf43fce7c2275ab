"""Modules that turn voxel/pillar features into a BEV feature map."""
from pcdet.models.backbones_2d.map_to_bev.pointpillar_scatter import PointPillarScatter

__all__ = {"PointPillarScatter": PointPillarScatter}
