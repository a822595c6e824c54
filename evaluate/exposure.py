"""Per-image exposure: which members does the audit single out, and how surely.

For every member (both halves), under the recipe's strongest attack (the report's criterion), its calibrated p-value
= (1 + calibration non-members scoring at least as high) / (1 + calibration non-members): the chance a non-member
scores this high, so small means exposed. Plus its rank among the members, the attacks whose calibrated 1%-FPR
threshold flags it, and every attack's score. Written to exposure.csv (one row per recipe and member).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .metrics import threshold_for_fpr


def calibrated_p_values(scores: np.ndarray, calibration_nonmember_scores: np.ndarray) -> np.ndarray:
    ref = np.sort(np.asarray(calibration_nonmember_scores, dtype=np.float64))
    at_least = len(ref) - np.searchsorted(ref, np.asarray(scores, dtype=np.float64), side="left")
    return (1.0 + at_least) / (1.0 + len(ref))


def recipe_exposure(out: Path, recipe: str, rows: list[dict], manifest_sha: dict[int, str] | None = None) -> pd.DataFrame:
    from .report import strongest

    top = strongest(rows)
    frames = {r["attack"]: pd.read_csv(out / r["scores"]) for r in rows}
    base = frames[top["attack"]]
    cal_non = base[(base.split == "calibration") & (base.is_member == 0)].score.to_numpy(float)
    members = base[(base.is_member == 1) & base.split.isin(("calibration", "test"))].copy()
    members["p_value"] = calibrated_p_values(members.score.to_numpy(float), cal_non)
    members = members.sort_values(["p_value", "score"], ascending=[True, False])
    members["rank"] = np.arange(1, len(members) + 1)
    table = members[["sample_id", "source", "split", "p_value", "rank"]].rename(columns={"split": "half"})
    table.insert(0, "recipe", recipe)
    table.insert(1, "strongest_attack", top["attack"])
    flagged = {i: [] for i in table.sample_id}
    for label, df in frames.items():
        cal = df[(df.split == "calibration") & (df.is_member == 0)].score.to_numpy(float)
        threshold = threshold_for_fpr(cal, 0.01)
        by_id = df.set_index("sample_id").score
        table[f"score:{label}"] = table.sample_id.map(by_id).to_numpy()
        for i in table.sample_id:
            if i in by_id.index and by_id[i] >= threshold:
                flagged[i].append(label)
    table["flagged_at_1%fpr_by"] = [";".join(flagged[i]) for i in table.sample_id]
    if manifest_sha:
        table.insert(4, "sha256", table.sample_id.map(manifest_sha).to_numpy())
    return table


def write_exposure(out: str | Path, results: dict) -> Path:
    """exposure.csv for every recipe of a results folder; results["exposure"] keeps the ten most exposed each."""
    import json

    from diffmia.io import write_text

    out = Path(out)
    by_recipe: dict[str, list[dict]] = {}
    for r in results["rows"]:
        by_recipe.setdefault(r["recipe"], []).append(r)
    tables, summary = [], {}
    for recipe, rows in by_recipe.items():
        info = results["recipes"].get(recipe, {})
        manifest = out / info.get("run_dir", "") / "manifest.json"
        sha = None
        if manifest.is_file():
            data = json.loads(manifest.read_text())
            sha = {int(e["index"]): e.get("sha256") for role in ("members", "nonmembers") for e in data.get(role, [])}
        table = recipe_exposure(out, recipe, rows, sha)
        tables.append(table)
        summary[recipe] = table.head(10)[["sample_id", "source", "half", "p_value", "flagged_at_1%fpr_by"]].to_dict("records")
    path = out / "exposure.csv"
    write_text(path, pd.concat(tables, ignore_index=True).to_csv(index=False))
    results["exposure"] = summary
    return path
