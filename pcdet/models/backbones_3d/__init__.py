"""3D backbones (sparse convolutions, point networks) and voxel feature encoders (``vfe/``)."""
__all__ = {}
