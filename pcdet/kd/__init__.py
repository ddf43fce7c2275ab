"""Knowledge distillation (KD) for 3D detectors: a frozen teacher, a student, KD methods.

Layout: ``wrapper.py`` (the model the training loop sees: student + frozen teacher + methods),
``config.py`` (the ``KD`` config section, the teacher's config and voxels), ``keys.py`` (the one
teacher-key suffix ``_tea``), ``methods/`` (one file per method, registered by NAME), ``nodes.py``
(which places are distilled and their
importance), ``knn.py`` (chunked exact KNN), ``graph_ops.py`` (fused graph-convolution losses).
``python -m pcdet.kd list`` lists the registered methods.
"""
from pcdet.kd.config import finalize_kd_cfg, resolve_teacher_cfg_file
from pcdet.kd.keys import TEA, tea
from pcdet.kd.methods import KD_METHODS
from pcdet.kd.wrapper import DistillationWrapper, build_kd_network

__all__ = ["DistillationWrapper", "build_kd_network", "KD_METHODS", "TEA", "tea", "finalize_kd_cfg",
           "resolve_teacher_cfg_file"]
