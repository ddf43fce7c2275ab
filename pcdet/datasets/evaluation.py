"""The evaluator protocol: a dataset's metric, fed batch by batch.

Owns :class:`Evaluator`. ``eval_one_epoch`` drives any dataset through it, so the evaluation loop
knows no task::

    evaluator = dataset.build_evaluator(output_dir)     # EVALUATORS[dataset.EVALUATOR](dataset, output_dir)
    evaluator.reset()
    for batch in loader:
        pred_dicts, ret_dict = model(batch)
        evaluator.process(batch, pred_dicts, ret_dict)
    text, metrics = evaluator.evaluate()               # also writes the evaluator's own files
    extra = evaluator.summary()                        # counts for metrics.json

An evaluator streams: ``process`` keeps what the metric needs and no more (a segmentation
evaluator adds each batch to a confusion matrix; the KITTI one keeps the prediction annotations,
since AP needs every detection of the split). ``metric_value(metrics, name)`` maps a metric name of
the benchmark tables (``bev_map``, ``3d_car_moderate``, ``miou``, ...) to a value of ``metrics``,
and ``TABLE_METRICS`` lists the default accuracy metrics of its task, so the harness needs no
dataset-specific code. Register an evaluator in :data:`pcdet.datasets.registries.EVALUATORS`.
"""


class Evaluator:
    """Base class; see the module docstring."""

    #: default accuracy metrics of the benchmark tables for this evaluator's task
    TABLE_METRICS = ()

    def __init__(self, dataset, output_dir=None):
        self.dataset = dataset
        self.output_dir = output_dir
        self.reset()

    def reset(self):
        """Forget everything processed so far."""
        raise NotImplementedError(f"{type(self).__name__} must define reset")

    def process(self, batch_dict, pred_dicts, ret_dict=None):
        """Take one batch's predictions (``pred_dicts``: one dict per sample, the model's eval output)."""
        raise NotImplementedError(f"{type(self).__name__} must define process")

    def evaluate(self):
        """``(text, {metric: value})`` over everything processed; may write files into ``output_dir``."""
        raise NotImplementedError(f"{type(self).__name__} must define evaluate")

    def summary(self):
        """Extra figures for ``metrics.json`` (frame counts, recall, ...)."""
        return {}

    @classmethod
    def metric_value(cls, metrics, name):
        """The value of a table metric ``name`` from an ``evaluate()`` dict (KeyError when unknown)."""
        return metrics[name]

    @classmethod
    def is_table_metric(cls, name):
        """Does ``name`` denote an accuracy metric this evaluator computes?"""
        return name in cls.TABLE_METRICS
