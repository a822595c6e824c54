"""Membership inference attacks, one per file, registered by name in ATTACKS."""
from . import clid, naive_loss, noise_aggregation, pia, rediffuse, sd_mia, secmi  # noqa: F401 - registration
from .base import ATTACKS, Attack, AttackBatch, AttackParams, build_attack

__all__ = ["ATTACKS", "Attack", "AttackBatch", "AttackParams", "build_attack"]
