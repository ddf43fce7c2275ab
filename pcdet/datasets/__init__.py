"""Dataset registry and data loader construction.

Owns the registry ``__all__`` (dataset class name -> class, as named by ``DATASET`` in a data
config) and :func:`build_dataloader`. Dataset modules are imported on first use (module-level
``__getattr__``), so ``python -m pcdet.datasets.kitti.kitti_dataset`` does not import itself twice.
"""
import importlib
import random

import numpy as np

# torch and the dataset modules are imported inside the functions: light tools such as the KITTI
# evaluator (``pcdet.datasets.kitti.eval``) import this package and must start quickly.

#: DATASET name -> (module, class); resolved lazily.
_DATASETS = {
    "KittiDataset": ("pcdet.datasets.kitti.kitti_dataset", "KittiDataset"),
}


def get_dataset_class(name):
    """The dataset class registered as ``name`` (KeyError listing the known names otherwise)."""
    if name not in _DATASETS:
        raise KeyError(f"DATASET: unknown dataset {name!r}; known: {', '.join(sorted(_DATASETS))}")
    module, attr = _DATASETS[name]
    return getattr(importlib.import_module(module), attr)


def __getattr__(name):
    if name == "__all__":
        from pcdet.datasets.dataset import DatasetTemplate

        registry = {"DatasetTemplate": DatasetTemplate}
        registry.update({key: get_dataset_class(key) for key in _DATASETS})
        return registry
    if name in _DATASETS:
        return get_dataset_class(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def seed_worker(worker_id):
    """DataLoader ``worker_init_fn``: seed numpy and ``random`` from the worker's torch seed.

    torch gives every worker ``base_seed + worker_id``, with ``base_seed`` drawn anew for each
    epoch from the loader's generator, so augmentations differ between workers and epochs and are
    reproducible when the generator is seeded.
    """
    import torch

    s = torch.initial_seed() % (2**32)
    np.random.seed(s)
    random.seed(s)


def build_dataloader(dataset_cfg, class_names, batch_size, dist, root_path=None, workers=4, seed=None, logger=None,
                     training=True, merge_all_iters_to_one_epoch=False, total_epochs=0, drop_last=False):
    """Build ``(dataset, dataloader, sampler)`` for ``dataset_cfg.DATASET``.

    ``dist`` uses a :class:`DistributedSampler` (shuffled in training); otherwise training data is
    shuffled by the loader and ``sampler`` is None. ``seed`` seeds the loader's generator (shuffling
    and the per-worker seeds, see :func:`seed_worker`), so augmentations are reproducible with
    ``workers > 0``; with ``workers=0`` augmentations use the caller's global numpy state.
    """
    import torch
    from torch.utils.data import DataLoader
    from torch.utils.data.distributed import DistributedSampler

    dataset = get_dataset_class(dataset_cfg.DATASET)(
        dataset_cfg=dataset_cfg, class_names=class_names, root_path=root_path, training=training, logger=logger
    )
    if merge_all_iters_to_one_epoch:
        dataset.merge_all_iters_to_one_epoch(merge=True, epochs=total_epochs)
    generator = None
    if seed is not None:
        generator = torch.Generator()
        generator.manual_seed(int(seed))
    if dist:
        sampler = DistributedSampler(dataset, shuffle=training, seed=0 if seed is None else int(seed))
    else:
        sampler = None
    dataloader = DataLoader(
        dataset,
        batch_size=batch_size,
        pin_memory=False,
        num_workers=workers,
        shuffle=(sampler is None) and training,
        collate_fn=dataset.collate_batch,
        drop_last=drop_last,
        sampler=sampler,
        timeout=0,
        worker_init_fn=seed_worker,
        generator=generator,
    )
    return dataset, dataloader, sampler
