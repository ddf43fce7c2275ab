"""Datasets: the registries and data loader construction.

Owns :func:`build_dataloader` and :func:`get_dataset_class`; the registries (datasets,
augmentations, processors, evaluators, dataset writers) are in :mod:`pcdet.datasets.registries`,
the per-key data contract in :mod:`pcdet.datasets.data_contract`. Dataset modules are imported on
first use (lazy registry entries), so ``python -m pcdet.datasets.kitti.kitti_dataset`` does not
import itself twice and light tools such as the KITTI evaluator start quickly.
"""
import random

import numpy as np

from pcdet.datasets.registries import DATASETS

__all__ = ["DATASETS", "build_dataloader", "get_dataset_class", "seed_worker"]


def get_dataset_class(name):
    """The dataset class registered as ``name`` (``DATA_CONFIG.DATASET``)."""
    return DATASETS.get(name, "DATA_CONFIG.DATASET")


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
                     training=True, drop_last=False):
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
