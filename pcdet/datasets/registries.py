"""The data registries: datasets, augmentation and processing steps, evaluators, dataset writers.

* :data:`DATASETS` -- ``DATA_CONFIG.DATASET`` -> dataset class (a ``DatasetTemplate`` subclass);
  entries of the package are registered lazily (imported on first use), so that light tools that
  import :mod:`pcdet.datasets` start quickly.
* :data:`AUGMENTATIONS` -- ``DATA_AUGMENTOR.AUG_CONFIG_LIST[i].NAME`` -> step class.
* :data:`PROCESSORS` -- ``DATA_PROCESSOR[i].NAME`` -> step class.
* :data:`EVALUATORS` -- the ``EVALUATOR`` a dataset class declares -> evaluator class
  (:mod:`pcdet.datasets.evaluation`).
* :data:`DATASET_WRITERS` -- ``--format`` of the embedded synthetic generator -> writer class.

Code outside the package registers its own entries the same way (``@DATASETS.register()``).
"""
from pcdet.utils.registry import Registry

DATASETS = Registry("dataset", "DATA_CONFIG.DATASET: dataset classes")
AUGMENTATIONS = Registry("augmentation", "DATA_AUGMENTOR.AUG_CONFIG_LIST[i].NAME: training augmentations")
PROCESSORS = Registry("processor", "DATA_PROCESSOR[i].NAME: point / voxel processing steps")
EVALUATORS = Registry("evaluator", "the EVALUATOR of a dataset class: streaming metric evaluators")
DATASET_WRITERS = Registry("dataset_writer", "--format of python -m pcdet.datasets.synthetic: dataset writers")

DATASETS.lazy("KittiDataset", "pcdet.datasets.kitti.kitti_dataset:KittiDataset")
EVALUATORS.lazy("kitti", "pcdet.datasets.kitti.evaluator:KittiEvaluator")
DATASET_WRITERS.lazy("kitti", "pcdet.datasets.synthetic.writers:KittiWriter")
DATASET_WRITERS.lazy("semantickitti", "pcdet.datasets.synthetic.writers:SemanticKittiWriter")
PROCESSORS.lazy("transform_points_to_cylinder_grid", "pcdet.datasets.processor.cylindrical:TransformPointsToCylinderGrid")
DATASETS.lazy("SemanticKittiDataset", "pcdet.datasets.semantickitti.semantickitti_dataset:SemanticKittiDataset")
EVALUATORS.lazy("miou", "pcdet.datasets.semantickitti.eval:SemanticKittiEvaluator")
