"""KITTI: the dataset (``kitti_dataset``), its helpers (``kitti_utils``), the devkit metric (``eval``)
and its evaluator behind the protocol (``evaluator``)."""
