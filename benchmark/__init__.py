"""Benchmarks (run as ``python -m benchmark.<name>`` from the repository root)."""
