"""pcdet: an OpenPCDet-style 3D LiDAR perception toolkit for knowledge distillation."""

__version__ = "0.1.0"
