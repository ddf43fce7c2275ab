"""Dense (BEV) detection heads, registered by ``MODEL.DENSE_HEAD.NAME``."""
from pcdet.models.dense_heads.anchor_head_single import AnchorHeadSingle
from pcdet.models.dense_heads.anchor_head_template import AnchorHeadTemplate

__all__ = {"AnchorHeadTemplate": AnchorHeadTemplate, "AnchorHeadSingle": AnchorHeadSingle}
