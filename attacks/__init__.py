"""Membership inference attacks, one per file, registered by name in ATTACKS.

`ATTACKS` is the one list of attack names: the built-ins below (each module imported when its name is first looked
up, so listing names imports no torch) and the attacks other installed packages declare in the entry-point group
``diffmia.attacks`` (docs/guides/adding-an-attack.md).
"""

from __future__ import annotations

from typing import Any

from diffmia.registry import Registry

BUILTIN = {
    "clid": "diffmia.attacks.clid",
    "gsa": "diffmia.attacks.gsa",
    "lira": "diffmia.attacks.lira",
    "naive_loss": "diffmia.attacks.naive_loss",
    "noise_aggregation": "diffmia.attacks.noise_aggregation",
    "pia": "diffmia.attacks.pia",
    "pian": "diffmia.attacks.pia",
    "quantile_regression": "diffmia.attacks.quantile_regression",
    "rediffuse": "diffmia.attacks.rediffuse",
    "rmia": "diffmia.attacks.rmia",
    "sd_mia": "diffmia.attacks.sd_mia",
    "secmi": "diffmia.attacks.secmi",
    "sima": "diffmia.attacks.sima",
}

ATTACKS: Registry[Any] = Registry("attack", builtin=BUILTIN, group="diffmia.attacks")

_BASE = ("Attack", "AttackBatch", "AttackParams", "build_attack", "register_attack")
__all__ = ["ATTACKS", "BUILTIN", *_BASE]


def __getattr__(name: str):  # the torch-backed base classes, imported on first use (start-up time, not a cycle)
    if name in _BASE:
        from . import base

        return getattr(base, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
