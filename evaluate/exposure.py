"""Per-image exposure: which members does the audit single out, and how surely.

For every member (both halves), under the recipe's strongest attack (the report's criterion), its calibrated p-value
= (1 + calibration non-members scoring at least as high) / (1 + calibration non-members): the chance a non-member
scores this high, so small means exposed. Plus its rank among the members (ties at the p-value floor broken by how many
attacks flag it), the attacks whose calibrated 1%-FPR threshold flags it, and every attack's score. Written to exposure.csv (one row per recipe and member).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .folder import resolve_inside
from .groups import UNASSIGNED, group_labels, group_risk
from .metrics import threshold_for_fpr
from .verdict import strongest


def calibrated_p_values(scores: np.ndarray, calibration_nonmember_scores: np.ndarray) -> np.ndarray:
    ref = np.sort(np.asarray(calibration_nonmember_scores, dtype=np.float64))
    at_least = len(ref) - np.searchsorted(ref, np.asarray(scores, dtype=np.float64), side="left")
    return (1.0 + at_least) / (1.0 + len(ref))


def recipe_exposure(out: Path, recipe: str, rows: list[dict]) -> pd.DataFrame:
    """Every member's calibrated p-value under the strongest attack, ranked: by p-value, then (the many ties at the
    floor 1/(n+1) that n calibration non-members allow) by the number of attacks whose calibrated 1%-FPR threshold
    flags the image, then by score."""
    top = strongest(rows)
    frames = {r["attack"]: pd.read_csv(out / r["scores"]) for r in rows}
    base = frames[top["attack"]]
    cal_non = base[(base.split == "calibration") & (base.is_member == 0)].score.to_numpy(float)
    members = base[(base.is_member == 1) & base.split.isin(("calibration", "test"))].copy()
    members["p_value"] = calibrated_p_values(members.score.to_numpy(float), cal_non)
    flagged = {i: [] for i in members.sample_id}
    scores_of = {}
    for label, df in frames.items():
        cal = df[(df.split == "calibration") & (df.is_member == 0)].score.to_numpy(float)
        threshold = threshold_for_fpr(cal, 0.01)
        by_id = df.set_index("sample_id").score
        scores_of[label] = by_id
        for i in members.sample_id:
            if i in by_id.index and by_id[i] >= threshold:
                flagged[i].append(label)
    members["flagged_count"] = members.sample_id.map(lambda i: len(flagged[i])).astype(int)
    members = members.sort_values(["p_value", "flagged_count", "score"], ascending=[True, False, False], kind="stable")
    members["rank"] = np.arange(1, len(members) + 1)
    # no file name or pixel hash: names often carry personal data (manifest.json maps sample_id to both)
    table = members[["sample_id", "split", "p_value", "rank", "flagged_count"]].rename(columns={"split": "half"})
    table.insert(0, "recipe", recipe)
    table.insert(1, "strongest_attack", top["attack"])
    for label, by_id in scores_of.items():
        table[f"score:{label}"] = table.sample_id.map(by_id).to_numpy()
    table["flagged_at_1%fpr_by"] = [";".join(flagged[i]) for i in table.sample_id]
    return table


def floor_ties(table: pd.DataFrame, calibration_nonmembers: int) -> dict:
    """How many members share the smallest p-value the calibration non-members allow, 1 / (n + 1): the list of
    'most exposed' images is a tie-break among them."""
    floor = 1.0 / (calibration_nonmembers + 1)
    return {
        "floor": floor,
        "calibration_nonmembers": int(calibration_nonmembers),
        "at_floor": int((table.p_value <= floor * (1 + 1e-9)).sum()),
        "members": int(len(table)),
    }


def thumbnails(pixels: np.ndarray, max_value: float = 255.0) -> np.ndarray:
    """(N, H, W, C) pixels as flat 16x16 grayscale thumbnails on a 0-1 scale (smaller images stay as they are): the
    space of the audit's near-duplicate check and of the distance to the nearest public image."""
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(np.asarray(pixels)).float().permute(0, 3, 1, 2).mean(1, keepdim=True) / max_value
    if x.shape[-1] > 16:
        x = F.adaptive_avg_pool2d(x, 16)
    return x.flatten(1).numpy()


def image_properties(images, manifest, ids: list[int]) -> pd.DataFrame:
    """Simple, measurable properties of images `ids`: RMS pixel distance (0-1 scale, 16x16 grayscale thumbnails) to
    the nearest public image, whether the training set duplicated it, and for captioned data the caption's rarity
    (-log10 of its share among members and public images)."""
    from sklearn.neighbors import NearestNeighbors

    def thumbs(idx):
        return thumbnails(images.pixels[np.asarray(idx, dtype=np.int64)], images.max_value)

    out = pd.DataFrame({"sample_id": ids})
    public = manifest.indices("public")
    if public:
        dims = thumbs(ids[:1]).shape[1]
        nn = NearestNeighbors(n_neighbors=1).fit(thumbs(public))
        out["nearest_public_distance"] = nn.kneighbors(thumbs(ids))[0][:, 0] / np.sqrt(dims)
    duplicated = set((manifest.extra.get("training_set") or {}).get("duplicated_members") or [])
    if duplicated:
        out["duplicated"] = [int(i in duplicated) for i in ids]
    captions = [images.captions[i] for i in ids]
    if any(captions):
        pool = [images.captions[i] for i in manifest.indices("members") + public]
        counts = pd.Series(pool).value_counts()
        out["caption_rarity"] = [-np.log10(counts.get(c, 1) / len(pool)) for c in captions]
    return out


def exposure_factors(table: pd.DataFrame, properties: pd.DataFrame, path: Path | None = None) -> list[dict]:
    """Spearman correlation of each property (and the naive loss, where it was run) with -log10 p: positive means
    images with more of the property are more exposed. A scatter panel per property when `path` is given."""
    from scipy.stats import spearmanr

    merged = table.merge(properties, on="sample_id", how="left")
    merged["exposure"] = -np.log10(merged.p_value)
    columns = [c for c in properties.columns if c != "sample_id"]
    if "score:naive_loss" in merged and table.strongest_attack.iloc[0] != "naive_loss":  # else circular
        merged["loss (naive_loss score = -loss)"] = merged["score:naive_loss"]
        columns.append("loss (naive_loss score = -loss)")
    factors = []
    for c in columns:
        x = merged[c].to_numpy(float)
        if np.nanstd(x) == 0:
            continue
        rho, pv = spearmanr(x, merged.exposure, nan_policy="omit")
        factors.append(
            {"property": c, "spearman": float(rho), "p_value": float(pv), "images": int(np.isfinite(x).sum())}
        )
    if path is not None and factors:
        from .plots import plt, save_figure

        fig, axes = plt.subplots(1, len(factors), figsize=(4 * len(factors), 3.4), squeeze=False, layout="constrained")
        for ax, f in zip(axes[0], factors):
            ax.scatter(merged[f["property"]], merged.exposure, s=8, alpha=0.6)
            ax.set_xlabel(f["property"], fontsize=8)
            ax.set_ylabel("exposure: -log10 p", fontsize=8)
            ax.set_title(f"Spearman {f['spearman']:+.2f} (p {f['p_value']:.2g})", fontsize=9)
        fig.suptitle("What makes members exposed (strongest attack)")
        save_figure(fig, path)
    return factors


def write_exposure(out: str | Path, results: dict, data: dict | None = None) -> Path:
    """exposure.csv for every recipe of a results folder; results["exposure"] keeps the ten most exposed each.
    `data`: recipe -> (ImageSet, SplitManifest), to relate exposure to image properties (exposure_factors)."""
    from diffmia.core.io import csv_text, write_text

    out = Path(out)
    by_recipe: dict[str, list[dict]] = {}
    for r in results["rows"]:
        by_recipe.setdefault(r["recipe"], []).append(r)
    tables, summary, ties = [], {}, {}
    spec = (results.get("evaluation") or {}).get("groups", "label")
    for recipe, rows in by_recipe.items():
        table = recipe_exposure(out, recipe, rows)
        if data and recipe in data:
            images, manifest_obj = data[recipe]
            groups = group_labels(
                spec, images, manifest_obj, [e.index for e in manifest_obj.members + manifest_obj.nonmembers]
            )
            if groups:
                top = pd.read_csv(out / strongest(rows)["scores"])
                results.setdefault("groups", {})[recipe] = {"spec": spec, "rows": group_risk(top, table, groups)}
                table["group"] = table.sample_id.map(groups).fillna(UNASSIGNED)
            props = image_properties(images, manifest_obj, [int(i) for i in table.sample_id])
            results.setdefault("exposure_factors", {})[recipe] = exposure_factors(
                table, props, out / "plots" / f"exposure-factors-{recipe}.png"
            )
            table = table.merge(props, on="sample_id", how="left")
        tables.append(table)
        summary[recipe] = table.head(10)[["sample_id", "half", "p_value", "flagged_at_1%fpr_by"]].to_dict("records")
        ties[recipe] = floor_ties(table, strongest(rows)["n_calibration_nonmembers"])
    path = out / "exposure.csv"
    write_text(path, csv_text(pd.concat(tables, ignore_index=True)))
    results["exposure"] = summary
    results["exposure_ties"] = ties
    return path


def rerank_exposure(out: str | Path, results: dict) -> Path:
    """exposure.csv of a folder written before ties at the p-value floor were counted and broken by the number of
    attacks: ranked again, the image-property columns of the old file kept."""
    out = Path(out)
    old = out / "exposure.csv"
    kept = None
    if old.is_file():
        frame = pd.read_csv(old)
        props = [c for c in ("nearest_public_distance", "duplicated", "caption_rarity", "group") if c in frame]
        if props:
            kept = frame[["recipe", "sample_id", *props]]
    path = write_exposure(out, results)
    if kept is not None:
        from diffmia.core.io import csv_text, write_text

        table = pd.read_csv(path).merge(kept, on=["recipe", "sample_id"], how="left")
        write_text(path, csv_text(table))
    return path


@dataclass
class ShownMembers:
    """What --show-examples adds to a report: each recipe's grid of its most exposed test members and the file name
    of each audited image (names often carry personal data, so neither is shown by default)."""

    grids: dict[str, Path]
    names: dict[str, dict[int, str]]


def show_members(out: Path, results: dict) -> ShownMembers:
    """The member images and file names a report shows with --show-examples, from the recipes' runs."""
    out = Path(out)
    recipes = sorted({r["recipe"] for r in results["rows"]}, key=list(results["recipes"]).index)
    return ShownMembers(
        {recipe: example_grid(out, results, recipe) for recipe in recipes},
        {recipe: source_names(out, results, recipe) for recipe in results["recipes"]},
    )


def example_grid(out: Path, results: dict, recipe: str) -> Path | None:
    """The 16 test members the strongest attack is surest about (only with --show-examples)."""
    from diffmia.targets.images import grid_png
    from diffmia.targets.runs import load_run

    rows = [r for r in results["rows"] if r["recipe"] == recipe]
    top = strongest(rows)
    df = pd.read_csv(out / top["scores"])
    members = df[(df.split == "test") & (df.is_member == 1)].nlargest(16, "score")
    loaded = load_run(out / results["recipes"][recipe]["run_dir"])
    return grid_png(
        loaded.images.tensor(members.sample_id.tolist(), loaded.resolution),
        out / "plots" / f"examples-{recipe}.png",
        private=True,
    )  # member images: owner-only


def source_names(out: Path, results: dict, recipe: str) -> dict[int, str]:
    """sample_id -> file name from the recipe's manifest (shown only with --show-examples: names often carry personal
    data)."""
    manifest = resolve_inside(out, results["recipes"][recipe].get("run_dir", "")) / "manifest.json"
    if not manifest.is_file():
        return {}
    saved = json.loads(manifest.read_text(encoding="utf-8"))
    return {
        int(e["index"]): str(e.get("source", "")) for role in ("members", "nonmembers") for e in saved.get(role, [])
    }
