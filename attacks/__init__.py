"""Membership inference attacks, one per file, registered by name in ATTACKS.

`ATTACKS` (diffmia.core.registries) is the one list of attack names: the built-ins (each module imported when its
name is first looked up, so listing names imports no torch) and the attacks other installed packages declare in the
entry-point group ``diffmia.attacks`` (docs/guides/adding-an-attack.md).
"""

from __future__ import annotations

from diffmia.core.registries import ATTACK_MODULES as BUILTIN
from diffmia.core.registries import ATTACKS

_BASE = ("Attack", "AttackBatch", "AttackParams", "build_attack", "register_attack")
__all__ = ["ATTACKS", "BUILTIN", *_BASE]


def __getattr__(name: str):  # the torch-backed base classes, imported on first use (start-up time, not a cycle)
    if name in _BASE:
        from . import base

        return getattr(base, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
