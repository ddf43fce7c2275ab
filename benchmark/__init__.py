"""Benchmarks (run as ``python -m benchmark.<name>`` from the repository root): the table harness
(``python -m benchmark``), the demo (``python -m benchmark.demo``) and the measurement scripts."""
