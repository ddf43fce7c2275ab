"""Training machinery shared by ``tools/train.py``, ``tools/test.py`` and the benchmark harness:
optimizer and schedule builders, the epoch loop with checkpoints, and evaluation of a model."""
