"""Defenses, one per file, registered by name in DEFENSES; recipes switch them on under `defenses:`.

`DEFENSES` is the one list of defense names: the built-ins below (each module imported when its name is first looked
up) and the defenses other installed packages declare in the entry-point group ``diffmia.defenses``
(docs/guides/adding-a-defense.md).
"""

from __future__ import annotations

from typing import Any

from diffmia.registry import Registry

BUILTIN = {
    "caption_randomisation": "diffmia.defenses.text",
    "dedup": "diffmia.defenses.dedup",
    "dp_sgd": "diffmia.defenses.dp_sgd",
    "dual_model": "diffmia.defenses.dual_model",
    "image_noise": "diffmia.defenses.noise",
    "input_perturbation": "diffmia.defenses.noise",
    "lora": "diffmia.defenses.lora",
    "public_base": "diffmia.defenses.public_base",
    "text_embedding_noise": "diffmia.defenses.text",
}

DEFENSES: Registry[Any] = Registry("defense", builtin=BUILTIN, group="diffmia.defenses")

_BASE = ("Defense", "DefenseContext", "DefenseParams", "build_defenses", "register_defense")
__all__ = ["BUILTIN", "DEFENSES", *_BASE]


def __getattr__(name: str):  # the torch-backed base classes, imported on first use (start-up time, not a cycle)
    if name in _BASE:
        from . import base

        return getattr(base, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
