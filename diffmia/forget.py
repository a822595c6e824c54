"""What an audit left outside its results folder that holds or was trained on member data: the audited images cached
for reference training (`audit-data/*.npz`) and the reference models, as results.json and the score sidecars list
them. `diffmia forget OUT` removes them."""

from __future__ import annotations

import json
from pathlib import Path


def member_data_outside(out: str | Path) -> list[Path]:
    """Existing paths outside `out` that results.json (member_data_copies) and the score JSONs (reference folders)
    name, each once, sorted."""
    out = Path(out).resolve()
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    found: set[Path] = set()
    for info in results.get("recipes", {}).values():
        found.update(Path(p) for p in info.get("member_data_copies") or [])
    for row in results.get("rows", []):
        sidecar = (out / row["scores"]).with_suffix(".json")
        if sidecar.is_file():
            refs = json.loads(sidecar.read_text(encoding="utf-8")).get("references") or {}
            found.update(Path(f) for f in refs.get("folders", []))
    return sorted(p for p in found if p.exists() and out not in p.resolve().parents)
