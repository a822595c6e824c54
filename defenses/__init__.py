"""Defenses, one per file, registered by name in DEFENSES; recipes switch them on under `defenses:`."""

from . import dedup, dp_sgd, dual_model, lora, noise, public_base, text  # noqa: F401 - registration
from .base import DEFENSES, Defense, DefenseContext, DefenseParams, build_defenses

__all__ = ["DEFENSES", "Defense", "DefenseContext", "DefenseParams", "build_defenses"]
