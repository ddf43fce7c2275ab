"""Anchor generation and anchor-to-GT target assignment for anchor heads."""
