"""Set-level membership inference (SD-MIA, arXiv 2605.27020, section "set-level"): is a SET of L images, as a whole,
drawn from the training data? The set's score is the mean of its images' scores.

For each L: `sets` random sets of L test members and as many of L test non-members (without replacement inside a
set) give an AUC over sets. A p-value per member set tests "no more member-like than non-members": the chance that
the mean of L calibration non-member scores reaches the set's mean, from the normal approximation of that mean
(calibration non-members only, so nothing is fitted on the test halves). Reported: AUC, the median p-value of member
sets, and the share of member sets with p < 0.05.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import norm
from sklearn.metrics import roc_auc_score


def set_level(is_member, scores, split, sizes=(1, 2, 5, 10, 20, 30), sets: int = 500, seed: int = 0) -> list[dict]:
    is_member = np.asarray(is_member).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    split = np.asarray(split)
    test = split == "test"
    members, nonmembers = scores[test & is_member], scores[test & ~is_member]
    reference = scores[(split == "calibration") & ~is_member]
    mu, sd = reference.mean(), reference.std(ddof=1)
    rng = np.random.default_rng(seed)
    out = []
    for size in sizes:
        if size > min(len(members), len(nonmembers)):
            continue
        m = np.array([rng.choice(members, size, replace=False).mean() for _ in range(sets)])
        n = np.array([rng.choice(nonmembers, size, replace=False).mean() for _ in range(sets)])
        auc = roc_auc_score(np.r_[np.ones(sets), np.zeros(sets)], np.r_[m, n])
        p = norm.sf((m - mu) / (sd / np.sqrt(size))) if sd > 0 else np.ones(sets)
        out.append(
            {
                "set_size": size,
                "auc": float(auc),
                "median_p_value": float(np.median(p)),
                "share_p_below_0.05": float((p < 0.05).mean()),
            }
        )
    return out


def set_level_plot(curves: dict[str, list[dict]], path, title: str = "set-level inference"):
    """AUC against set size, one line per attack."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .plots import save_figure

    fig, ax = plt.subplots(figsize=(6, 4))
    for label, rows in curves.items():
        ax.plot([r["set_size"] for r in rows], [r["auc"] for r in rows], marker="o", label=label)
    ax.axhline(0.5, ls=":", color="grey")
    ax.set_xlabel("set size L (images per set)")
    ax.set_ylabel("AUC over sets (test halves)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return save_figure(fig, path)
