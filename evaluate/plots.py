"""Plots (matplotlib, Agg): ROC per recipe (linear and log-log with the 1% and 0.1% FPR marks), score histograms of
members vs non-members, and the privacy-utility plot. Each function writes one PNG and returns its path."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from diffmia.core.io import write_bytes  # noqa: E402

from .metrics import roc_points  # noqa: E402

FPR_MARKS = (0.01, 0.001)


def save_figure(fig, path: Path) -> Path:
    """Write a matplotlib figure as a PNG (atomically, 110 dpi) and close it."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    write_bytes(path, buf.getvalue())
    return path


def roc_plot(title: str, curves: Mapping[str, tuple[np.ndarray, np.ndarray]], path: Path) -> Path:
    """`curves`: attack label -> (is_member, score) on the test halves."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.6))
    for label, (labels, scores) in curves.items():
        fpr, tpr = roc_points(labels, scores)
        for ax in axes:
            ax.plot(fpr, tpr, label=label, lw=1.5)
    n_neg = min(int((~np.asarray(labels, bool)).sum()) for labels, _ in curves.values())
    for ax, log in zip(axes, (False, True)):
        ax.plot([1e-4, 1], [1e-4, 1], ls=":", color="grey", lw=1, label="chance")
        for mark in FPR_MARKS:
            ax.axvline(mark, ls="--", color="grey", lw=0.8)
        ax.set_xlabel("false-positive rate (non-members flagged)")
        ax.set_ylabel("true-positive rate (members found)")
        if log:
            floor = 1.0 / max(n_neg, 1)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlim(min(floor, 1e-3) / 2, 1)
            ax.set_ylim(min(floor, 1e-3) / 2, 1.02)
            ax.axvline(floor, ls="-.", color="#c0392b", lw=0.8, label=f"1/{n_neg}: one false positive")
            ax.legend(fontsize=7, loc="lower right")
            ax.set_title(f"{title}: log-log (FPR floor 1/{n_neg})")
        else:
            ax.set_xlim(0, 1)
            ax.set_ylim(0, 1.02)
            ax.set_title(f"{title}: ROC")
    axes[0].legend(fontsize=8, loc="lower right")
    return save_figure(fig, path)


def histogram_plot(title: str, curves: Mapping[str, tuple[np.ndarray, np.ndarray]], path: Path) -> Path:
    n = len(curves)
    cols = min(n, 3)
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False, layout="constrained")
    for ax, (label, (labels, scores)) in zip(axes.flat, curves.items()):
        labels = np.asarray(labels, bool)
        scores = np.asarray(scores, float)
        bins = np.histogram_bin_edges(scores, bins=30)
        # one filled step patch per group (ax.hist draws 30 bar patches each: the slowest part of a 13-panel figure)
        for group, name, colour in ((~labels, "non-members", "tab:blue"), (labels, "members", "tab:red")):
            ax.stairs(np.histogram(scores[group], bins)[0], bins, fill=True, alpha=0.6, label=name, color=colour)
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("score (higher = member)", fontsize=8)
        ax.ticklabel_format(axis="x", style="sci", scilimits=(-3, 4), useMathText=True)  # -1.25e-4, not -0.000125
        ax.tick_params(labelsize=7)
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(5))
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    axes[0, 0].legend(fontsize=8)
    fig.suptitle(f"{title}: score distributions (test halves)")
    return save_figure(fig, path)


def privacy_utility_plot(points: Sequence[dict], fid_label: str, path: Path) -> Path:
    """`points`: one per recipe with recipe, fid, tpr, tpr_lo, tpr_hi, auc, auc_lo, auc_hi, attack."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.4))
    for ax, key, name in ((axes[0], "tpr", "TPR at 1% FPR (calibrated)"), (axes[1], "auc", "AUC")):
        for p in points:
            y = p[key]
            err = [[y - p[f"{key}_lo"]], [p[f"{key}_hi"] - y]]
            ax.errorbar(p["fid"], y, yerr=err, fmt="o", capsize=3)
            ax.annotate(p["recipe"], (p["fid"], y), textcoords="offset points", xytext=(5, 4), fontsize=8)
        ax.set_xlabel(f"{fid_label} (lower = better samples)")
        ax.set_ylabel(f"{name}, strongest attack")
        ax.grid(alpha=0.3)
    axes[1].axhline(0.5, ls=":", color="grey", lw=1)
    fig.suptitle("privacy-utility trade-off: one point per recipe (down and left is better)")
    return save_figure(fig, path)
