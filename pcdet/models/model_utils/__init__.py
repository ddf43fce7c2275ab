"""Helpers shared by detectors: post-processing NMS."""
