"""Membership inference attacks, one per file, registered by name in ATTACKS."""

from . import (  # noqa: F401 - registration
    clid,
    gsa,
    lira,
    naive_loss,
    noise_aggregation,
    pia,
    quantile_regression,
    rediffuse,
    rmia,
    sd_mia,
    secmi,
    sima,
)
from .base import ATTACKS, Attack, AttackBatch, AttackParams, build_attack

__all__ = ["ATTACKS", "Attack", "AttackBatch", "AttackParams", "build_attack"]
