"""Shared utilities: the one :class:`~pcdet.utils.registry.Registry` class, box conventions and
conversions (``box_utils``, ``box_coder_utils``), KITTI calibration and label files, losses, common
helpers, bird's-eye-view pictures (``bev_plot``), the numba warm-up (``numba_warmup``), repository
paths, and the only spconv import point with its CPU guards (``spconv_utils``)."""
