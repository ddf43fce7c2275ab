"""The model registries: whole models by family, and the parts a model template builds per slot.

``MODEL.NAME`` is looked up in :data:`DETECTORS` or :data:`SEGMENTORS` (its family); each section
of ``MODEL`` (``VFE``, ``BACKBONE_3D``, ``MAP_TO_BEV``, ``PFE``, ``BACKBONE_2D``, ``DENSE_HEAD``,
``POINT_HEAD``, ``ROI_HEAD``, ``SEG_HEAD``) names its module in the registry of that slot. A new
module registers itself with ``@<REGISTRY>.register()`` where it is defined; code outside the
package (a plugin, a test) registers the same way and needs no edit here.
"""
from pcdet.utils.registry import Registry

DETECTORS = Registry("detector", "MODEL.NAME of 3D object detectors (Detector3DTemplate subclasses)")
SEGMENTORS = Registry("segmentor", "MODEL.NAME of LiDAR semantic segmentors (Segmentor3DTemplate subclasses)")

VFES = Registry("vfe", "MODEL.VFE.NAME: voxel / pillar / point feature encoders")
BACKBONES_3D = Registry("backbone_3d", "MODEL.BACKBONE_3D.NAME: 3D backbones (sparse convolutions, point networks)")
MAP_TO_BEV = Registry("map_to_bev", "MODEL.MAP_TO_BEV.NAME: voxel features -> bird's-eye-view map")
PFE = Registry("pfe", "MODEL.PFE.NAME: point feature extractors of two-stage detectors (voxel set abstraction)")
BACKBONES_2D = Registry("backbone_2d", "MODEL.BACKBONE_2D.NAME: 2D BEV backbones")
DENSE_HEADS = Registry("dense_head", "MODEL.DENSE_HEAD.NAME: dense (BEV) detection heads")
POINT_HEADS = Registry("point_head", "MODEL.POINT_HEAD.NAME: per-point heads (foreground, proposals)")
ROI_HEADS = Registry("roi_head", "MODEL.ROI_HEAD.NAME: second-stage box refinement heads")
SEG_HEADS = Registry("seg_head", "MODEL.SEG_HEAD.NAME: per-point / per-voxel classification heads")

#: model family -> registry of its MODEL.NAME values
FAMILIES = {"detector": DETECTORS, "segmentor": SEGMENTORS}
