"""Targets: datasets and split manifests, model builders, the training loop and the Target interface."""
