"""Dense (BEV) detection heads, registered in :data:`pcdet.models.registries.DENSE_HEADS` by
``MODEL.DENSE_HEAD.NAME``. A head offers ``kd_view(batch_dict, suffix, decode)`` (per BEV cell and anchor
slot: class logits and box codes; see ``AnchorHeadTemplate.kd_view``), the head-independent view the
distillation methods read; a new head kind implements the same view."""
from pcdet.models.dense_heads.anchor_head_single import AnchorHeadSingle
from pcdet.models.dense_heads.anchor_head_template import AnchorHeadTemplate

__all__ = ["AnchorHeadTemplate", "AnchorHeadSingle"]
