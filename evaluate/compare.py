"""Paired recipe comparison: does recipe R leak less than the baseline B, on the same test images?

For each recipe, its strongest attack (the report's criterion) is compared with the baseline's strongest on the test
images both scored (paired by sample id). A stratified paired bootstrap resamples test members and test non-members
(the same draw for both recipes) and recomputes the AUC and the calibrated TPR at 1% FPR (each threshold fixed on its
own calibration half, as reported); the 95% interval of each difference and a two-sided bootstrap p-value decide
its verdict (one by AUC, one at 1% FPR), never more than the interval shows.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .metrics import auc_of, threshold_for_fpr
from .verdict import strongest


def _test_and_threshold(df: pd.DataFrame, fpr: float = 0.01) -> tuple[pd.Series, pd.Series, float]:
    cal = df[(df.split == "calibration") & (df.is_member == 0)].score.to_numpy(float)
    test = df[df.split == "test"].set_index("sample_id")
    return test.score.astype(float), test.is_member.astype(int), threshold_for_fpr(cal, fpr)


def paired_difference(recipe: pd.DataFrame, baseline: pd.DataFrame, n_boot: int = 2000, seed: int = 0) -> dict:
    sr, yr, tr = _test_and_threshold(recipe)
    sb, yb, tb = _test_and_threshold(baseline)
    common = sr.index.intersection(sb.index)
    common = common[(yr[common] == yb[common]).to_numpy()]
    if len(common) < 0.5 * max(len(sr), len(sb)):
        raise ValueError(
            f"the two recipes share only {len(common)} test images (of {len(sr)} and {len(sb)}): they were "
            f"audited on different images, so a paired comparison does not apply"
        )
    y = yr[common].to_numpy()
    a, b = sr[common].to_numpy(), sb[common].to_numpy()
    members, non = np.flatnonzero(y == 1), np.flatnonzero(y == 0)

    def stats(idx):
        yy = y[idx]
        pos = yy == 1
        d_auc = auc_of(a[idx][pos], a[idx][~pos]) - auc_of(b[idx][pos], b[idx][~pos])  # = roc_auc_score, by counting
        d_tpr = (a[idx][pos] >= tr).mean() - (b[idx][pos] >= tb).mean()
        return d_auc, d_tpr

    observed = stats(np.arange(len(y)))
    rng = np.random.default_rng(seed)
    draws = np.array(
        [stats(np.concatenate([rng.choice(members, len(members)), rng.choice(non, len(non))])) for _ in range(n_boot)]
    )
    out = {"paired_test_images": int(len(y)), "paired_members": int(len(members)), "paired_nonmembers": int(len(non))}
    for k, name in enumerate(("auc", "tpr@1%fpr")):
        lo, hi = np.quantile(draws[:, k], [0.025, 0.975])
        p = 2 * min((draws[:, k] <= 0).mean(), (draws[:, k] >= 0).mean())
        out.update(
            {
                f"d_{name}": float(observed[k]),
                f"d_{name}_lo": float(lo),
                f"d_{name}_hi": float(hi),
                f"p_{name}": float(min(1.0, max(p, 1.0 / n_boot))),
            }
        )
    return out


def verdict(row: dict) -> str:
    """From the AUC difference's interval: the sentence a reviewer may quote."""
    if row["d_auc_hi"] < 0:
        return "leaks less, significantly"
    if row["d_auc_lo"] > 0:
        return "leaks more, significantly"
    return "no significant difference at this sample size"


def low_fpr_verdict(row: dict) -> str:
    """The same from the calibrated TPR@1%FPR difference's interval: the AUC can stay level while the members found
    at a low false-positive rate (the field's measure of a confident attack) change, or the other way round."""
    if row["d_tpr@1%fpr_hi"] < 0:
        return "finds fewer members at 1% FPR, significantly"
    if row["d_tpr@1%fpr_lo"] > 0:
        return "finds more members at 1% FPR, significantly"
    return "no significant difference at 1% FPR at this sample size"


def compare_recipes(out: str | Path, results: dict, baseline: str, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    out = Path(out)
    by_recipe: dict[str, list[dict]] = {}
    for r in results["rows"]:
        by_recipe.setdefault(r["recipe"], []).append(r)
    if baseline not in by_recipe:
        raise KeyError(f"--baseline: no recipe {baseline!r} in the results; they hold {', '.join(by_recipe)}")
    base = strongest(by_recipe[baseline])
    base_scores = pd.read_csv(out / base["scores"])
    table = []
    for recipe, rows in by_recipe.items():
        if recipe == baseline:
            continue
        top = strongest(rows)
        diff = paired_difference(pd.read_csv(out / top["scores"]), base_scores, n_boot, seed)
        fid, base_fid = top.get("fid"), base.get("fid")
        table.append(
            {
                "recipe": recipe,
                "baseline": baseline,
                "attack": top["attack"],
                "baseline_attack": base["attack"],
                **diff,
                "d_fid": (fid - base_fid) if fid is not None and base_fid is not None else None,
            }
        )
        table[-1]["verdict"] = verdict(table[-1])
        table[-1]["verdict_at_1%fpr"] = low_fpr_verdict(table[-1])
    return pd.DataFrame(table)


def comparison_lines(frame: pd.DataFrame) -> list[str]:
    lines = []
    for r in frame.to_dict("records"):
        fid = "" if r.get("d_fid") is None or r["d_fid"] != r["d_fid"] else f"; FID {r['d_fid']:+.2f}"
        lines.append(
            f"{r['recipe']} vs {r['baseline']}: {r['verdict']} by AUC; {r['verdict_at_1%fpr']}. "
            f"Strongest attacks {r['attack']} vs {r['baseline_attack']} "
            f"on the same {r['paired_test_images']} test images: AUC {r['d_auc']:+.3f} [{r['d_auc_lo']:+.3f}, "
            f"{r['d_auc_hi']:+.3f}] (p = {r['p_auc']:.3g}), calibrated TPR@1%FPR {r['d_tpr@1%fpr']:+.1%} "
            f"[{r['d_tpr@1%fpr_lo']:+.1%}, {r['d_tpr@1%fpr_hi']:+.1%}] (p = {r['p_tpr@1%fpr']:.3g}){fid}."
        )
    return lines
