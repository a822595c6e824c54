"""Membership-inference metrics from stored per-sample scores (higher score = more likely member).

Two threshold regimes, always labelled:
- calibrated (the default, the honest number): a threshold is fitted on the calibration halves and applied to the
  disjoint test halves (the CopyMark lesson, arXiv 2410.03640);
- oracle: the best threshold chosen on the test halves themselves, as many papers report — only for comparison.
Threshold-free numbers (AUC) are computed on the test halves. Intervals: bootstrap (95%, members and non-members
resampled separately) for AUC and TPR@FPR; Clopper-Pearson for rates at a fixed threshold. The empirical epsilon
lower bound follows Jagielski et al. (arXiv 2006.07709) with Clopper-Pearson upper bounds on FPR and FNR.
Built on scikit-learn's roc_curve / roc_auc_score and scipy's exact binomial intervals.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.stats import beta
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


# -- threshold-free and oracle metrics -------------------------------------------------------------------------
def auc(labels, scores) -> float:
    labels, scores = _check(labels, scores)
    return float(roc_auc_score(labels, scores))


def tpr_at_fpr(labels, scores, fpr: float) -> float:
    """Oracle TPR at FPR <= fpr: the largest TPR on the ROC curve of these very scores (every threshold: with
    roc_curve's default drop_intermediate, a corner on a straight stretch of the curve is dropped and the best rate
    can be missed)."""
    labels, scores = _check(labels, scores)
    fprs, tprs, _ = roc_curve(labels, scores, drop_intermediate=False)
    ok = fprs <= fpr + 1e-12
    return float(tprs[ok].max()) if ok.any() else 0.0


def best_balanced_accuracy(labels, scores) -> float:
    """Oracle ASR: the best (TPR + TNR) / 2 over all thresholds."""
    labels, scores = _check(labels, scores)
    fprs, tprs, _ = roc_curve(labels, scores)
    return float(((tprs + 1.0 - fprs) / 2.0).max())


# -- fixed thresholds --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Rates:
    threshold: float
    tp: int
    fp: int
    n_pos: int
    n_neg: int

    @property
    def tpr(self) -> float:
        return self.tp / self.n_pos

    @property
    def fpr(self) -> float:
        return self.fp / self.n_neg

    @property
    def fnr(self) -> float:
        return 1.0 - self.tpr

    @property
    def balanced_accuracy(self) -> float:
        return (self.tpr + 1.0 - self.fpr) / 2.0


def rates_at(labels, scores, threshold: float) -> Rates:
    """Counts when "member" is predicted for score >= threshold."""
    labels, scores = _check(labels, scores)
    predicted = scores >= threshold
    return Rates(
        float(threshold),
        int((predicted & labels).sum()),
        int((predicted & ~labels).sum()),
        int(labels.sum()),
        int((~labels).sum()),
    )


def threshold_for_fpr(nonmember_scores, fpr: float) -> float:
    """The lowest threshold whose false-positive rate on `nonmember_scores` stays <= fpr (ties count as positive)."""
    s = np.sort(np.asarray(nonmember_scores, dtype=np.float64))[::-1]
    allowed = int(math.floor(fpr * len(s) + 1e-9))  # how many non-members may score >= threshold
    if allowed >= len(s):
        return float(s[-1])
    # threshold just above the (allowed+1)-th highest non-member score
    return float(np.nextafter(s[allowed], np.inf))


def threshold_for_accuracy(labels, scores) -> float:
    """The threshold with the best balanced accuracy on these scores."""
    labels, scores = _check(labels, scores)
    fprs, tprs, thresholds = roc_curve(labels, scores)
    best = int(np.argmax(tprs - fprs))
    return float(min(thresholds[best], np.finfo(np.float64).max))


def clopper_pearson(k: int, n: int, alpha: float = 0.05) -> tuple[float, float]:
    """Exact two-sided (1 - alpha) interval for a binomial proportion k / n."""
    lo = 0.0 if k == 0 else float(beta.ppf(alpha / 2, k, n - k + 1))
    hi = 1.0 if k == n else float(beta.ppf(1 - alpha / 2, k + 1, n - k))
    return lo, hi


def clopper_pearson_upper(k: int, n: int, alpha: float = 0.05) -> float:
    """One-sided (1 - alpha) upper bound for k / n."""
    return 1.0 if k == n else float(beta.ppf(1 - alpha, k + 1, n - k))


def epsilon_lower_bound(rates: Rates, delta: float, alpha: float = 0.05) -> float:
    """eps >= max(ln((1 - delta - FNR)/FPR), ln((1 - delta - FPR)/FNR)) with Clopper-Pearson upper bounds on FPR and
    FNR at confidence 1 - alpha (each side alpha/2, so the pair holds jointly at 1 - alpha). 0 when nothing is shown."""
    fpr_hi = clopper_pearson_upper(rates.fp, rates.n_neg, alpha / 2)
    fnr_hi = clopper_pearson_upper(rates.n_pos - rates.tp, rates.n_pos, alpha / 2)
    best = 0.0
    for num, den in ((1.0 - delta - fnr_hi, fpr_hi), (1.0 - delta - fpr_hi, fnr_hi)):
        if num > 0 and den > 0:
            best = max(best, math.log(num / den))
    return best


def best_epsilon_threshold(labels, scores, delta: float, alpha: float = 0.05) -> float:
    """The threshold whose epsilon lower bound is largest on these (calibration) scores."""
    labels, scores = _check(labels, scores)
    candidates = np.unique(scores)
    best_t, best_eps = float(candidates[-1]), -1.0
    for t in candidates:
        eps = epsilon_lower_bound(rates_at(labels, scores, t), delta, alpha)
        if eps > best_eps:
            best_t, best_eps = float(t), eps
    return best_t


# -- bootstrap -----------------------------------------------------------------------------------------------------
def bootstrap_ci(
    labels, scores, statistic, n_boot: int = 1000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile interval of `statistic(labels, scores)`, members and non-members resampled separately."""
    labels, scores = _check(labels, scores)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    lab = np.r_[np.ones(n_pos, bool), np.zeros(n_neg, bool)]
    return bootstrap_pair_ci(
        scores[labels], scores[~labels], lambda p, n: statistic(lab, np.r_[p, n]), n_boot, seed, level
    )


def bootstrap_pair_ci(
    pos, neg, statistic, n_boot: int = 1000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """bootstrap_ci for a `statistic(member_scores, nonmember_scores)`: the same resamples (the same generator calls)."""
    if n_boot <= 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    values = np.empty(n_boot)
    for b in range(n_boot):
        values[b] = statistic(rng.choice(pos, len(pos)), rng.choice(neg, len(neg)))
    tail = (1 - level) / 2
    return float(np.quantile(values, tail)), float(np.quantile(values, 1 - tail))


def auc_of(pos: np.ndarray, neg: np.ndarray) -> float:
    """AUC from member and non-member scores by counting (ties count one half): roc_auc_score's value without its
    input checks, ~50x faster; what the 1000 bootstrap resamples of every cell use."""
    neg = np.sort(neg)
    below = np.searchsorted(neg, pos, side="left")
    tied = np.searchsorted(neg, pos, side="right") - below
    return float((below.sum() + 0.5 * tied.sum()) / (len(pos) * len(neg)))


def tpr_of(pos: np.ndarray, neg: np.ndarray, fpr: float) -> float:
    """tpr_at_fpr from member and non-member scores: the largest TPR whose FPR is at most `fpr` (+1e-12) over
    thresholds "score >= tau": with k the most false positives allowed, tau must lie above the (k+1)-th highest
    non-member score, and every member above it is caught."""
    n_neg = len(neg)
    k = int(np.floor((fpr + 1e-12) * n_neg))
    while k + 1 <= n_neg and (k + 1) / n_neg <= fpr + 1e-12:
        k += 1
    while k > 0 and k / n_neg > fpr + 1e-12:
        k -= 1
    if k >= n_neg:
        return 1.0
    bar = np.partition(neg, n_neg - 1 - k)[n_neg - 1 - k]  # the (k+1)-th highest non-member score
    return float((pos > bar).sum() / len(pos))


# -- everything for one attack on one target ----------------------------------------------------------------------
MIN_FALSE_POSITIVES = 10  # a calibrated rate resting on fewer false positives is shown greyed out, not as a finding


def evaluate_scores(
    is_member,
    scores,
    split,
    delta: float = 1e-5,
    fprs: tuple[float, ...] = (0.01, 0.001),
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> dict:
    """All metrics from one attack's per-sample scores with their calibration/test split labels."""
    is_member = np.asarray(is_member).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    split = np.asarray(split)
    cal, test = split == "calibration", split == "test"
    ly, sy = is_member[test], scores[test]
    lc, sc = is_member[cal], scores[cal]
    out: dict = {
        "n_test_members": int(ly.sum()),
        "n_test_nonmembers": int((~ly).sum()),
        "n_calibration_members": int(lc.sum()),
        "n_calibration_nonmembers": int((~lc).sum()),
        "auc": auc(ly, sy),
        "auc_ci": bootstrap_pair_ci(sy[ly], sy[~ly], auc_of, n_boot, seed),
    }
    # calibrated regime: thresholds from the calibration halves, rates on the test halves
    asr_rates = rates_at(ly, sy, threshold_for_accuracy(lc, sc))
    out["asr"] = asr_rates.balanced_accuracy
    out["asr_oracle"] = best_balanced_accuracy(ly, sy)
    for fpr in fprs:
        key = fpr_key(fpr)
        threshold = threshold_for_fpr(sc[~lc], fpr)
        r = rates_at(ly, sy, threshold)
        out[f"tpr@{key}"] = r.tpr
        # how many false positives the rate rests on: calibration non-members at or above the threshold (what fixed
        # it) and test non-members flagged; under MIN_FALSE_POSITIVES the report greys the rate out
        out[f"fp@{key}_calibration"] = rates_at(lc, sc, threshold).fp
        out[f"fp@{key}"] = r.fp
        out[f"tpr@{key}_ci"] = clopper_pearson(r.tp, r.n_pos, alpha)
        out[f"fpr@{key}_achieved"] = r.fpr
        out[f"fpr@{key}_achieved_ci"] = clopper_pearson(r.fp, r.n_neg, alpha)
        out[f"tpr@{key}_oracle"] = tpr_at_fpr(ly, sy, fpr)
        out[f"tpr@{key}_oracle_ci"] = bootstrap_pair_ci(
            sy[ly], sy[~ly], lambda p, n, f=fpr: tpr_of(p, n, f), n_boot, seed + 1
        )
    eps_rates = rates_at(ly, sy, best_epsilon_threshold(lc, sc, delta, alpha))
    out["epsilon_lower_bound"] = epsilon_lower_bound(eps_rates, delta, alpha)
    out["epsilon_threshold_tpr"] = eps_rates.tpr
    out["epsilon_threshold_fpr"] = eps_rates.fpr
    out["delta"] = delta
    return out


def fpr_key(fpr: float) -> str:
    """The column suffix of a target FPR: 0.01 -> '1%fpr', 0.001 -> '0.1%fpr'."""
    return f"{fpr * 100:g}%fpr"


def roc_points(labels, scores) -> tuple[np.ndarray, np.ndarray]:
    labels, scores = _check(labels, scores)
    fprs, tprs, _ = roc_curve(labels, scores)
    return fprs, tprs
