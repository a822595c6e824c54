"""Plots (matplotlib, Agg): oracle ROC per recipe (linear and log-log with the 1% and 0.1% FPR marks) with the
calibrated operating points on them, score histograms of
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


def roc_figure(
    title: str,
    curves: Mapping[str, tuple[np.ndarray, np.ndarray]],
    points: Mapping[str, Sequence[dict]] | None = None,
    strongest: str | None = None,
    baseline: tuple[np.ndarray, np.ndarray] | None = None,
):
    """Oracle ROC curves (every threshold on the test halves), linear and log-log, with each attack's calibrated
    operating points on them: `points`: attack label -> [{fpr, fpr_lo, fpr_hi, tpr, tpr_lo, tpr_hi, target}], the
    threshold fixed on the calibration halves, read on the test halves, with its 95% intervals as error bars.
    `curves`: attack label -> (is_member, score) on the test halves. The strongest attack's curve is drawn thicker;
    `baseline`: the blind baseline's (is_member, score), a grey dashed curve (what the images alone give)."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.8))
    colours = {}
    for label, (labels, scores) in curves.items():
        fpr, tpr = roc_points(labels, scores)
        name = f"{label} (strongest)" if label == strongest else label
        for ax in axes:
            (line,) = ax.plot(fpr, tpr, label=name, lw=2.6 if label == strongest else 1.2)
            colours[label] = line.get_color()
    if baseline is not None:
        fpr, tpr = roc_points(*baseline)
        for ax in axes:
            ax.plot(fpr, tpr, ls="--", color="#555", lw=1.4, label="blind baseline (no model)", gid="blind-baseline")
    n_neg = min(int((~np.asarray(labels, bool)).sum()) for labels, _ in curves.values())
    log_floor = min(1.0 / max(n_neg, 1), 1e-3) / 2
    for label, marks in (points or {}).items():
        for m in marks:
            for ax, log in zip(axes, (False, True)):
                if log and m["tpr"] <= 0:
                    continue  # no member found: nothing to place on a log axis (the linear panel shows it)
                x, lo = m["fpr"], m["fpr_lo"]
                marker = "o" if m["target"] >= 0.01 else "s"
                if log and x <= 0:  # no false positive on the test half: drawn at the axis edge, pointing left
                    x, marker = log_floor * 1.15, "<"
                if log and lo <= 0:
                    lo = x  # an interval reaching 0 cannot be drawn on a log axis: its upper part only
                ax.errorbar(
                    x,
                    m["tpr"],
                    xerr=[[x - lo], [max(m["fpr_hi"] - x, 0)]],
                    yerr=[[m["tpr"] - m["tpr_lo"]], [m["tpr_hi"] - m["tpr"]]],
                    fmt=marker,
                    ms=5,
                    capsize=2,
                    lw=0.8,
                    color=colours.get(label, "black"),
                    mec="black",
                    mew=0.6,
                    gid=f"calibrated:{label}:{m['target']:g}",
                )
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
            ax.set_xlim(log_floor, 1)
            ax.set_ylim(log_floor, 1.02)
            ax.axvline(floor, ls="-.", color="#c0392b", lw=0.8, label=f"1/{n_neg}: one false positive")
            ax.set_title(f"{title}: oracle ROC, log-log (FPR floor 1/{n_neg})", fontsize=10)
        else:
            ax.set_xlim(0, 1)
            ax.set_ylim(0, 1.02)
            ax.set_title(f"{title}: oracle ROC (every threshold on the test halves)", fontsize=10)
    handles, names = axes[1].get_legend_handles_labels()
    fig.legend(handles, names, fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    fig.tight_layout()
    if points:
        fig.text(
            0.5,
            -0.02,
            "Markers: calibrated operating points (threshold fixed on the calibration halves; circle: 1% FPR target, "
            "square: 0.1%; '<' at the edge: no test false positive), with 95% intervals of the achieved FPR and the TPR.",
            ha="center",
            fontsize=8,
        )
    return fig


def roc_plot(
    title: str,
    curves: Mapping[str, tuple[np.ndarray, np.ndarray]],
    path: Path,
    points: Mapping[str, Sequence[dict]] | None = None,
    strongest: str | None = None,
    baseline: tuple[np.ndarray, np.ndarray] | None = None,
) -> Path:
    """roc_figure written as a PNG."""
    return save_figure(roc_figure(title, curves, points, strongest, baseline), path)


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
