"""A results folder read back from disk: every path its results.json names is checked to stay inside it, and every
recipe name to be a name (a crafted results.json writes and reads nothing outside the folder)."""

from __future__ import annotations

import re
from pathlib import Path

from diffmia.core.errors import DiffmiaError


class ReportError(DiffmiaError, ValueError):
    """A results.json that names a path outside its folder or a recipe name that is not one."""


RECIPE_NAME = re.compile(r"^[A-Za-z0-9_.+-]+$")


def resolve_inside(out: Path, relative: str) -> Path:
    """`out / relative`, refused when it leaves the results folder (an absolute path, or ../ in a crafted
    results.json)."""
    root = Path(out).resolve()
    path = (root / relative).resolve()
    if path != root and root not in path.parents:
        raise ReportError(f"{Path(out) / 'results.json'}: path {str(relative)[:120]!r} is outside the results folder")
    return path


def check_results(out: Path, results: dict) -> None:
    """Every recipe name a file-name-safe name, and every path results.json names inside the folder."""
    for name in list(results.get("recipes", {})) + [r.get("recipe", "") for r in results.get("rows", [])]:
        if not RECIPE_NAME.match(str(name)) or str(name) in (".", ".."):
            raise ReportError(
                f"{Path(out) / 'results.json'}: recipe name {str(name)[:80]!r} is not a name "
                f"(letters, digits and _ . + - only)"
            )
    for info in results.get("recipes", {}).values():
        resolve_inside(out, info.get("run_dir", ""))
        if (info.get("blind_baseline") or {}).get("scores"):
            resolve_inside(out, info["blind_baseline"]["scores"])
    for row in results.get("rows", []):
        resolve_inside(out, row["scores"])
