"""Membership-inference metrics from per-sample scores (higher score = more likely member).

Built on scikit-learn's roc_curve / roc_auc_score. TPR at a fixed FPR is read off the ROC curve as the largest TPR
whose FPR does not exceed the target (the convention of the attack papers).
"""
from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve


def _check(labels, scores) -> tuple[np.ndarray, np.ndarray]:
    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    if labels.shape != scores.shape or labels.ndim != 1:
        raise ValueError(f"labels {labels.shape} and scores {scores.shape} must be 1-D of one length")
    if labels.all() or not labels.any():
        raise ValueError("need both members and non-members to compute a metric")
    if not np.isfinite(scores).all():
        raise ValueError("scores contain NaN or infinite values")
    return labels, scores


def auc(labels, scores) -> float:
    labels, scores = _check(labels, scores)
    return float(roc_auc_score(labels, scores))


def tpr_at_fpr(labels, scores, fpr: float) -> float:
    labels, scores = _check(labels, scores)
    fprs, tprs, _ = roc_curve(labels, scores)
    ok = fprs <= fpr + 1e-12
    return float(tprs[ok].max()) if ok.any() else 0.0


def best_balanced_accuracy(labels, scores) -> float:
    """ASR: the best (TPR + TNR) / 2 over all thresholds."""
    labels, scores = _check(labels, scores)
    fprs, tprs, _ = roc_curve(labels, scores)
    return float(((tprs + 1.0 - fprs) / 2.0).max())
