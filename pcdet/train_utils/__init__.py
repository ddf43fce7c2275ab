"""Training machinery shared by ``tools/train.py``, ``tools/test.py``, the demo and the benchmark
harness: optimizer and schedule builders (``optimization``), the precision choice (``precision``),
the epoch loop with checkpoints (``train_utils``) and its hooks (``hooks``), evaluation through the
dataset's evaluator (``eval_utils``), config loading and output folders (``experiment``) and the one
launcher of ``tools/train.py`` in a child process (``launcher``)."""
