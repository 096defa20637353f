"""Experiment 1 helpers: breaking profiles down by category, and the report."""
