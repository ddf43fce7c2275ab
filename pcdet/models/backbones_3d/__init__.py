"""3D backbones (sparse convolutions, point networks) and voxel feature encoders (``vfe/``)."""
# Registry: pcdet.models.registries.BACKBONES_3D (SECOND's sparse backbone and point networks register there).
__all__ = []
