"""3D backbones (sparse convolutions, point networks) and voxel feature encoders (``vfe/``)."""
# Registry: pcdet.models.registries.BACKBONES_3D (SECOND's sparse backbone and point networks register there).
from pcdet.models.backbones_3d.cylinder_unet import Asymm3DUNet
from pcdet.models.backbones_3d.spconv_backbone import VoxelBackBone8x

__all__ = ["Asymm3DUNet", "VoxelBackBone8x"]
