"""Embedded synthetic LiDAR dataset in the KITTI and SemanticKITTI formats (no download needed).

This folder owns the synthetic data generator: the scene model (``scene.py``), the simulated
64-beam LiDAR and its numba ray caster (``sensor.py``), per-frame scene sampling and KITTI label
derivation (``generator.py``), the writers registry and output-folder checks (``writers.py``:
``kitti`` and ``semantickitti``), dataset generation (``build.py``, CLI in ``__main__.py``), the
label statistics of real KITTI that drive it (``derive_stats.py`` -> ``kitti_label_stats.json``)
and the synthetic-vs-real comparison reports (``stats.py`` for KITTI labels, ``seg_stats.py`` for
SemanticKITTI classes). See ``README.md`` for the models.

    python -m pcdet.datasets.synthetic --format kitti --out output/synthetic_kitti --frames 200 --seed 0
"""
from .build import generate_dataset, split_ids
from .generator import GENERATOR_VERSION, FrameGenerator
from .writers import MANIFEST_NAME, OutputDirError, register_writer

__all__ = ["generate_dataset", "split_ids", "FrameGenerator", "GENERATOR_VERSION", "MANIFEST_NAME",
           "OutputDirError", "register_writer"]
