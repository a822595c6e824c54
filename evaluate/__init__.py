"""Evaluation: metrics from stored per-sample scores."""
