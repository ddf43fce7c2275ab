"""Every registry of the toolkit, loaded: ``python -m pcdet.registries`` lists them and their names.

Owns :func:`load_all` (imports the packages whose modules register themselves, resolves the lazy
entries and returns ``{registry name: Registry}``) and :data:`CAPABILITY_PREFIXES`, the
``kind:name`` spelling the benchmark tables use for what a registry holds (``detector:PointPillar``,
``segmentation:Cylinder3D``, ``dataset:KittiDataset``, ``kd:PointDistiller``, ``evaluator:kitti``).
"""
import sys

from pcdet.utils.registry import all_registries

#: registry name -> capability prefix of the benchmark tables
CAPABILITY_PREFIXES = {"detector": "detector", "segmentor": "segmentation", "dataset": "dataset", "KD method": "kd",
                       "evaluator": "evaluator"}


def load_all():
    """Import every package that registers entries; ``{registry name: Registry}``."""
    import pcdet.datasets.augmentor.data_augmentor  # noqa: F401
    import pcdet.datasets.processor.data_processor  # noqa: F401
    import pcdet.kd.methods  # noqa: F401
    import pcdet.models  # noqa: F401
    import pcdet.train_utils.hooks  # noqa: F401

    return all_registries()


def capabilities():
    """``{"kind:name", ...}`` of everything registered now (the benchmark's capability list)."""
    caps = set()
    for name, registry in load_all().items():
        prefix = CAPABILITY_PREFIXES.get(name)
        if prefix is not None:
            caps |= {f"{prefix}:{entry}" for entry in registry.names()}
    return caps


def main(argv=None):
    for name, registry in sorted(load_all().items()):
        print(f"{name:15s} {registry.doc}")
        print(f"{'':15s} {', '.join(registry.names()) or '(none yet)'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
