"""2D BEV backbones, registered by ``MODEL.BACKBONE_2D.NAME``; ``map_to_bev/`` builds their input."""
from pcdet.models.backbones_2d.base_bev_backbone import BaseBEVBackbone

__all__ = {"BaseBEVBackbone": BaseBEVBackbone}
