"""2D BEV backbones, registered in :data:`pcdet.models.registries.BACKBONES_2D` by ``MODEL.BACKBONE_2D.NAME``;
``map_to_bev/`` builds their input."""
from pcdet.models.backbones_2d.base_bev_backbone import BaseBEVBackbone

__all__ = ["BaseBEVBackbone"]
