"""A results folder's rows and files, for every way of producing them (`diffmia run`, `diffmia audit`, `diffmia
report`): one score file's metrics row (`cell_row`), each recipe's headline one-run epsilon, and the files written
from the rows (exposure.csv, results.json, results.csv, the report)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from pydantic import Field, field_validator

from diffmia.core.config import StrictModel
from diffmia.core.io import csv_text, write_json, write_text

from .audit import canary_audit, headline_audit
from .blind import BLIND_VERSION, DESCRIPTION, NAME, baseline_scores
from .exposure import write_exposure
from .metrics import evaluate_scores
from .report import write_report
from .setlevel import set_level


class EvaluationConfig(StrictModel):
    set_sizes: list[int] = Field(default_factory=list, description="set-level inference: set sizes L (empty: off)")
    set_samples: int = Field(500, ge=10, le=100000, description="random sets per size")
    delta: float = Field(1e-5, gt=0.0, lt=1.0, description="delta of the empirical epsilon bound")
    alpha: float = Field(0.05, gt=0.0, lt=0.5, description="1 - confidence of the Clopper-Pearson bounds")
    bootstrap: int = Field(1000, ge=0, le=100000)
    fprs: list[float] = Field(default_factory=lambda: [0.01, 0.001])
    seed: int = Field(0, ge=0)
    groups: str | None = Field(
        "label",
        description="risk per group (evaluate/groups.py): 'label' (the dataset's class labels, where it has them), "
        "'caption:WORD,...' or a CSV with path/source and group columns; null: off",
    )

    @field_validator("groups")
    @classmethod
    def _groups_form(cls, value: str | None) -> str | None:
        if value and value != "label" and not value.startswith("caption:") and not value.lower().endswith(".csv"):
            raise ValueError(f"expected 'label', 'caption:WORD,...' or a CSV file, got {value!r}")
        return value


def write_results(out: Path, results: dict, data: dict | None = None) -> dict:
    """exposure.csv, results.json, results.csv and the report of a results folder (`diffmia run` and `diffmia audit`;
    with no rows, only the results files). `data`: recipe -> (ImageSet, SplitManifest) for the exposure factors."""
    if results["rows"]:
        write_exposure(out, results, data)
        add_headline_audits(out, results)
        add_blind_baselines(out, results, data)
    write_json(out / "results.json", results)
    write_text(out / "results.csv", csv_text(pd.DataFrame(results["rows"])))  # no cell a spreadsheet runs
    results["report"] = str(write_report(out, results)) if results["rows"] else None
    return results


def add_headline_audits(out: Path, results: dict) -> None:
    """Each recipe's headline one-run epsilon (evaluate/audit.py headline_audit: attack and guess counts chosen on one
    half of the canaries, epsilon on the other), from the canary rows of its attacks' score files."""
    ev = results.get("evaluation") or {}
    for recipe, info in results["recipes"].items():
        canaries = {}
        for row in results["rows"]:
            if row["recipe"] != recipe:
                continue
            frame = pd.read_csv(out / row["scores"], usecols=["sample_id", "split", "is_member", "score"])
            frame = frame[frame.split == "canary"]
            if len(frame):
                canaries[row["attack"]] = (
                    frame.sample_id.to_numpy(),
                    frame.score.to_numpy(),
                    frame.is_member.to_numpy(),
                )
        audit = headline_audit(canaries, ev.get("delta", 1e-5), ev.get("alpha", 0.05), ev.get("seed", 0))
        info["one_run_headline"] = audit.to_dict() if audit else None


def add_blind_baselines(out: Path, results: dict, data: dict | None) -> None:
    """Each recipe's blind baseline (evaluate/blind.py): a model-free classifier of its member and non-member images,
    its score file (blind-baseline/RECIPE.csv), its calibrated metrics, and a paired AUC test of every attack against
    it on the same test images. A recipe whose images are not at hand (`diffmia report` on an older folder) keeps
    what results.json holds."""
    from .compare import paired_difference

    ev = EvaluationConfig.model_validate(results.get("evaluation") or {})
    for recipe, info in results["recipes"].items():
        if not data or recipe not in data:
            continue
        images, manifest = data[recipe]
        frame = baseline_scores(images, manifest, ev.seed)
        path = out / NAME / f"{recipe}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text(path, csv_text(frame.drop(columns="source")), private=True)  # owner-only, as every score file
        metrics = evaluate_scores(
            frame.is_member, frame.score, frame.split, ev.delta, tuple(ev.fprs), ev.bootstrap, ev.seed, ev.alpha
        )
        paired = []
        for row in results["rows"]:
            if row["recipe"] != recipe or not ev.bootstrap:
                continue
            scores = pd.read_csv(out / row["scores"], usecols=["sample_id", "split", "is_member", "score"])
            if scores.score.isna().any():
                continue
            d = paired_difference(scores, frame, n_boot=ev.bootstrap, seed=ev.seed)
            paired.append({"attack": row["attack"], **{k: d[k] for k in ("d_auc", "d_auc_lo", "d_auc_hi", "p_auc")}})
        info["blind_baseline"] = {
            "version": BLIND_VERSION,
            "method": DESCRIPTION,
            "scores": str(path.relative_to(out)),
            "random_split": not info.get("external"),  # diffmia run: members and non-members drawn from one dataset
            **_flatten(metrics),
            "paired": paired,
        }


def score_file_metrics(scores: pd.DataFrame, ev: EvaluationConfig) -> tuple[dict, object, list[dict] | None]:
    """The metrics of one score file (`diffmia evaluate`, and every cell of `diffmia run` and `diffmia audit`).

    Args:
        scores: The score file's rows (sample_id, split, is_member, score).
        ev: Delta, FPRs, bootstrap, confidence and set sizes.

    Returns:
        (calibrated metrics with intervals, the canaries' one-run audit or None, set-level curves or None).
    """
    metrics = evaluate_scores(
        scores.is_member, scores.score, scores.split, ev.delta, tuple(ev.fprs), ev.bootstrap, ev.seed, ev.alpha
    )
    audit = canary_audit(scores, ev.delta)
    curves = (
        set_level(scores.is_member, scores.score, scores.split, tuple(ev.set_sizes), ev.set_samples, ev.seed)
        if ev.set_sizes
        else None
    )
    return metrics, audit, curves


def cell_row(
    recipe: str,
    label: str,
    attack,
    scores: pd.DataFrame,
    info: dict,
    loaded,
    ev: EvaluationConfig,
    recipe_info: dict,
    recipe_fields: dict,
    scores_path: str,
    utility: dict | None,
) -> dict:
    """One row of results.csv: an attack's calibrated metrics, one-run audit and costs on one target (shared by
    `diffmia run` and `diffmia audit`)."""
    metrics, audit, curves = score_file_metrics(scores, ev)
    duplicated = loaded.manifest.extra.get("training_set", {}).get("duplicated_members")
    dup_metrics = {}
    if duplicated:  # the originally duplicated members against all non-members
        subset = scores[(scores.is_member == 0) | scores.sample_id.isin(duplicated)]
        d = evaluate_scores(
            subset.is_member, subset.score, subset.split, ev.delta, (0.01,), ev.bootstrap, ev.seed, ev.alpha
        )
        dup_metrics = {
            "dup_members": len(duplicated),
            "dup_auc": d["auc"],
            "dup_auc_ci_lo": d["auc_ci"][0],
            "dup_auc_ci_hi": d["auc_ci"][1],
            "dup_tpr@1%fpr": d["tpr@1%fpr"],
        }
    if curves is not None:
        recipe_info.setdefault("set_level", {})[label] = curves
    return {
        "recipe": recipe,
        "attack": label,
        "attack_name": attack.name,
        "access": attack.access,
        "queries_per_sample": info["queries_per_sample"],
        "generations_per_sample": info.get("generations_per_sample", attack.generations_per_sample(loaded.target)),
        "attack_seconds": info["seconds"],
        "scores": scores_path,
        **_flatten(metrics),
        "defenses": recipe_fields.get("defenses", "none"),
        "dp_epsilon": recipe_fields.get("dp_epsilon"),
        "epsilon_one_run": audit.epsilon if audit else None,
        "one_run_guesses": f"{audit.correct}/{audit.guesses} of {audit.canaries}" if audit else None,
        "reference_seconds": (info.get("references") or {}).get("trained_seconds"),
        "references": (info.get("references") or {}).get("count"),
        "tuned": json.dumps(info["tuned"]["chosen"]) if info.get("tuned") else None,
        **dup_metrics,
        "fid": utility["fid"] if utility else None,
        "fid_floor": utility["fid_floor"] if utility else None,
        "kid": utility["kid"] if utility else None,
        "fid_label": utility["fid_label"] if utility else None,
        "train_seconds": recipe_fields.get("train_seconds"),
    }


def _flatten(metrics: dict) -> dict:
    flat = {}
    for key, value in metrics.items():
        if isinstance(value, (tuple, list)) and len(value) == 2:
            flat[f"{key}_lo"], flat[f"{key}_hi"] = value
        else:
            flat[key] = value
    return flat
