"""KITTI dataset helpers: evaluation (``eval``)."""
