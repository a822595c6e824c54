"""Defenses, one per file, registered by name in DEFENSES; recipes switch them on under `defenses:`.

`DEFENSES` (diffmia.core.registries) is the one list of defense names: the built-ins (each module imported when its
name is first looked up) and the defenses other installed packages declare in the entry-point group
``diffmia.defenses`` (docs/guides/adding-a-defense.md).
"""

from __future__ import annotations

from diffmia.core.registries import DEFENSE_MODULES as BUILTIN
from diffmia.core.registries import DEFENSES

_BASE = ("Defense", "DefenseContext", "DefenseParams", "build_defenses", "register_defense")
__all__ = ["BUILTIN", "DEFENSES", *_BASE]


def __getattr__(name: str):  # the torch-backed base classes, imported on first use (start-up time, not a cycle)
    if name in _BASE:
        from . import base

        return getattr(base, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
