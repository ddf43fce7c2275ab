"""Segmentation heads, registered in :data:`pcdet.models.registries.SEG_HEADS` by ``MODEL.SEG_HEAD.NAME``:
per-voxel / per-point class scores and their losses (each head's ``get_loss() -> (loss, tb_dict)``)."""
from pcdet.models.seg_heads.cylinder_seg_head import CylinderSegHead

__all__ = ["CylinderSegHead"]
