"""PointCloudFileDataset: run a model on arbitrary point files (no labels, no infos).

Used for inference on single frames, and by ``benchmark.complexity`` / ``benchmark.latency``.
Each item is a float32 ``.bin`` file (``NUM_POINT_FEATURES`` columns, KITTI layout by default)
cropped as the configured dataset class crops its samples (``crop_points``: SemanticKITTI's
``FOV_ANGLE``; KITTI's camera field of view, from ``../calib/<frame>.txt`` beside the velodyne
folder) and passed through the config's feature encoder and data processor exactly as in testing.
"""
from pathlib import Path

from pcdet.datasets.dataset import DatasetTemplate, load_points_bin


class PointCloudFileDataset(DatasetTemplate):
    """Point files processed as ``dataset_cfg`` says; the label space (``IGNORE_LABEL``) is that of the
    dataset class the config names (``DATA_CONFIG.DATASET``), so a segmentor builds as it trained."""

    def __init__(self, dataset_cfg, class_names, files, num_point_features=4, logger=None):
        from pcdet.datasets import get_dataset_class

        self.source_cls = get_dataset_class(dataset_cfg.DATASET) if "DATASET" in dataset_cfg else None
        self.IGNORE_LABEL = self.source_cls.IGNORE_LABEL if self.source_cls is not None else None
        super().__init__(dataset_cfg=dataset_cfg, class_names=class_names, training=False,
                         root_path=Path(files[0]).parent if files else None, logger=logger)
        if not files:
            raise ValueError("PointCloudFileDataset needs at least one point file")
        self.files = [Path(f) for f in files]
        self.num_point_features = num_point_features

    def __len__(self):
        return len(self.files)

    def __getitem__(self, index):
        path = self.files[index]
        return self.prepare_data({"points": self.load_points(path), "frame_id": path.stem})

    def load_points(self, path):
        """The file's points, cropped as the configured dataset class crops its samples."""
        points = load_points_bin(path, self.num_point_features)
        return points if self.source_cls is None else self.source_cls.crop_points(points, self.dataset_cfg, path)
