"""SemanticKITTI: the label definitions of the official api (``label_map``), the dataset in its real
layout (``semantickitti_dataset``) and the official mIoU (``eval``: metric, streaming evaluator,
command line)."""
