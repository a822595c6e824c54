"""Hyperparameters chosen on data, never on the test halves: every combination of the listed values is scored on the
calibration halves only, and the one with the best calibration TPR at 1% FPR is used (ties: the higher calibration
AUC, then the first listed). The table of every candidate is recorded with the attack's scores.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pandas as pd

from diffmia.core.devices import resolve_batch_size
from diffmia.evaluate.metrics import auc, rates_at, threshold_for_fpr

from .base import build_attack
from .reuse import ScoredRows, in_order, split
from .runner import COLUMNS, check_attack_fits, run_attack, score_batches


def check_grid(name: str, params: dict[str, Any], grid: dict[str, list], seed: int = 0) -> list:
    """Build the attack with every combination of the grid before any work, so a combination the attack refuses
    (e.g. noise aggregation's T below (k-1) x stride) stops the command at once, named, not an hour in. Returns the
    built attacks (for checks against a target)."""
    from diffmia.core.config import ConfigError

    keys, built = list(grid), []
    for values in itertools.product(*(grid[k] for k in keys)):
        combo = dict(zip(keys, values))
        try:
            built.append(build_attack(name, {**params, **combo}, seed=seed))
        except (ConfigError, KeyError) as exc:
            shown = ", ".join(f"{k}={v}" for k, v in combo.items())
            raise ConfigError(f"tune: {shown}: {exc}") from None
    return built


def calibration_rows(loaded):
    return [(e, m) for e, m in loaded.manifest.audit_entries() if e.half == "calibration"]


def tune(
    loaded,
    name: str,
    params: dict[str, Any],
    grid: dict[str, list],
    seed: int = 0,
    batch_size: int | None = None,
    target_fpr: float = 0.01,
    known: ScoredRows | None = None,
) -> tuple[dict[str, Any], dict]:
    """The best values for the parameters in `grid` (the others from `params`) by calibration TPR at `target_fpr`.
    Calibration rows `known` already holds for a candidate (e.g. the paper default scored as its own cell) are not
    computed again; every candidate's calibration rows are added to it, so the chosen one's final run
    (`run_attack(..., known=known)`) scores only the test half."""
    batch_size = resolve_batch_size(batch_size, "attack", loaded.target.device, loaded.target.image_shape)
    keys = list(grid)
    entries = calibration_rows(loaded)
    table, best, best_key = [], None, None
    queries = reused = 0
    for values in itertools.product(*(grid[k] for k in keys)):
        combo = dict(zip(keys, values))
        attack = build_attack(name, {**params, **combo}, seed=seed)
        check_attack_fits(loaded, attack)
        attack.prepare(loaded, loaded.run.root / ".cache")
        columns = COLUMNS + list(attack.components)
        have, todo = split(known, attack, entries)
        before = loaded.target.queries.sample_queries
        computed = [r for chunk in score_batches(loaded, attack, todo, batch_size, progress=False) for r in chunk]
        queries += loaded.target.queries.sample_queries - before
        reused += len(entries) - len(todo)
        if known is not None:
            known.add(attack, columns, computed)
        frame = pd.DataFrame(in_order(entries, have, computed), columns=columns)
        if attack.components:
            frame["score"] = attack.combine(frame)
        member = frame.is_member.to_numpy().astype(bool)
        score = frame.score.to_numpy(dtype=np.float64)
        tpr = rates_at(member, score, threshold_for_fpr(score[~member], target_fpr)).tpr
        area = auc(member, score)
        table.append({**combo, "calibration_tpr": float(tpr), "calibration_auc": float(area)})
        key = (tpr, area)
        if best_key is None or key > best_key:
            best, best_key = combo, key
    return best, {
        "grid": {k: list(v) for k, v in grid.items()},
        "chosen": best,
        "criterion": f"calibration TPR at {target_fpr:.1%} FPR, then AUC",
        "candidates": table,
        "calibration_queries": queries,
        "calibration_rows_reused": reused,
    }


def score_attack(
    loaded,
    name: str,
    params: dict,
    grid: dict | None,
    seed: int,
    out,
    batch_size: int | None = None,
    progress: bool = True,
    known=None,
    on_chosen=None,
):
    """Score a run with one attack (`diffmia attack` and every cell of `diffmia run`); with a grid, its parameters
    are first chosen on the calibration split (the chosen candidate's calibration rows are not scored twice).

    Args:
        loaded: The loaded run.
        name: The attack's registered name.
        params: Its parameters.
        grid: {parameter: candidates} to choose from on the calibration split, or None.
        seed: The attack's seed.
        out: Folder of the score file (None: the run's scores/).
        batch_size: Images per batch (None: the device's default).
        progress: Show progress bars.
        known: Rows already scored (a ScoredRows store), reused instead of scored again.
        on_chosen: Called with the chosen parameters, after tuning.

    Returns:
        The runner's AttackResult (scores, info, the score file's path).
    """
    known = known if known is not None else ScoredRows()
    attack, tuned = build_attack(name, params, seed=seed), None
    if grid:
        chosen, tuned = tune(loaded, name, params, grid, seed, batch_size, known=known)
        if on_chosen is not None:
            on_chosen(chosen)
        attack = build_attack(name, {**params, **chosen}, seed=seed)
    return run_attack(loaded, attack, out, batch_size=batch_size, progress=progress, tuned=tuned, known=known)
