"""Metric code: hand-checked cases and hypothesis properties."""

import math

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from diffmia.evaluate.metrics import (
    Rates,
    auc,
    best_balanced_accuracy,
    bootstrap_ci,
    clopper_pearson,
    clopper_pearson_upper,
    epsilon_lower_bound,
    evaluate_scores,
    rates_at,
    threshold_for_fpr,
    tpr_at_fpr,
)

scores_st = st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=4, max_size=60)


def labelled(scores):
    labels = np.array([i % 2 == 0 for i in range(len(scores))])
    return labels, np.array(scores)


@settings(max_examples=60, deadline=None)
@given(scores_st)
def test_invariant_to_monotone_transforms(scores):
    labels, s = labelled(scores)
    t = np.tanh(s / 1e6) * 3 + 7  # increasing; in floating point it may merge nearby values, so require it does not
    assume(len(np.unique(t)) == len(np.unique(s)))
    assert auc(labels, s) == pytest.approx(auc(labels, t))
    for f in (0.01, 0.1, 0.5):
        assert tpr_at_fpr(labels, s, f) == pytest.approx(tpr_at_fpr(labels, t, f))
    assert best_balanced_accuracy(labels, s) == pytest.approx(best_balanced_accuracy(labels, t))


@settings(max_examples=60, deadline=None)
@given(scores_st)
def test_swapped_labels_give_one_minus_auc(scores):
    labels, s = labelled(scores)
    assert auc(~labels, s) == pytest.approx(1 - auc(labels, s))


@settings(max_examples=60, deadline=None)
@given(scores_st, st.floats(0.0, 1.0))
def test_tpr_bounds(scores, fpr):
    labels, s = labelled(scores)
    tpr = tpr_at_fpr(labels, s, fpr)
    assert 0.0 <= tpr <= 1.0
    assert tpr_at_fpr(labels, s, 1.0) == 1.0
    assert tpr_at_fpr(labels, s, fpr) <= tpr_at_fpr(labels, s, min(1.0, fpr + 0.1)) + 1e-12


def test_ties():
    labels = np.array([1, 1, 0, 0], bool)
    assert auc(labels, np.zeros(4)) == 0.5
    assert tpr_at_fpr(labels, np.zeros(4), 0.01) == 0.0  # all tied: no threshold separates anything
    assert auc(labels, np.array([1.0, 0.0, 0.0, 0.0])) == pytest.approx(0.75)


def test_perfect_and_reversed():
    labels = np.array([1] * 50 + [0] * 50, bool)
    s = np.r_[np.linspace(1, 2, 50), np.linspace(-2, -1, 50)]
    assert auc(labels, s) == 1.0 and tpr_at_fpr(labels, s, 0.0) == 1.0
    assert auc(labels, -s) == 0.0 and tpr_at_fpr(labels, -s, 0.01) == 0.0


def test_threshold_for_fpr_respects_the_rate():
    rng = np.random.default_rng(0)
    s = rng.normal(size=1000)
    for f in (0.0, 0.001, 0.01, 0.1):
        t = threshold_for_fpr(s, f)
        assert (s >= t).mean() <= f + 1e-12
        assert (s >= np.nextafter(t, -np.inf) - 1e-9).sum() >= (s >= t).sum()


def test_clopper_pearson_known_values():
    lo, hi = clopper_pearson(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.3084971, abs=1e-6)  # 1 - 0.025**(1/10)
    lo, hi = clopper_pearson(5, 10)
    assert lo == pytest.approx(0.187086, abs=1e-5) and hi == pytest.approx(0.812914, abs=1e-5)
    assert clopper_pearson_upper(0, 100, 0.05) == pytest.approx(1 - 0.05 ** (1 / 100))


def test_epsilon_bound():
    # perfect separation of 1000 vs 1000: CP upper bounds are 1 - (alpha/2)^(1/n) on both rates
    r = Rates(0.0, tp=1000, fp=0, n_pos=1000, n_neg=1000)
    ub = 1 - 0.025 ** (1 / 1000)
    assert epsilon_lower_bound(r, 1e-5, 0.05) == pytest.approx(math.log((1 - 1e-5 - ub) / ub))
    # chance-level attack shows nothing
    assert epsilon_lower_bound(Rates(0.0, tp=500, fp=500, n_pos=1000, n_neg=1000), 1e-5) == 0.0
    # more data -> tighter (larger) bound for the same rates
    small = epsilon_lower_bound(Rates(0.0, tp=90, fp=1, n_pos=100, n_neg=100), 1e-5)
    large = epsilon_lower_bound(Rates(0.0, tp=900, fp=10, n_pos=1000, n_neg=1000), 1e-5)
    assert 0 < small < large


def test_bootstrap_ci_contains_estimate_and_is_seeded():
    rng = np.random.default_rng(1)
    labels = np.r_[np.ones(100, bool), np.zeros(100, bool)]
    s = np.r_[rng.normal(1, 1, 100), rng.normal(0, 1, 100)]
    lo, hi = bootstrap_ci(labels, s, auc, 300, seed=3)
    assert lo < auc(labels, s) < hi and hi - lo < 0.25
    assert bootstrap_ci(labels, s, auc, 300, seed=3) == (lo, hi)


def test_calibrated_differs_from_oracle_and_uses_only_calibration_for_thresholds():
    rng = np.random.default_rng(2)
    n = 200
    is_member = np.r_[np.ones(n, bool), np.zeros(n, bool)]
    split = np.array((["calibration"] * (n // 2) + ["test"] * (n // 2)) * 2)
    scores = np.where(is_member, rng.normal(1.5, 1, 2 * n), rng.normal(0, 1, 2 * n))
    m = evaluate_scores(is_member, scores, split, n_boot=100)
    assert m["n_test_members"] == m["n_test_nonmembers"] == 100
    assert 0.8 < m["auc"] < 0.95
    lo, hi = m["tpr@1%fpr_ci"]
    assert lo <= m["tpr@1%fpr"] <= hi
    # moving test scores cannot move the calibrated threshold, only the rates
    shifted = scores.copy()
    shifted[(split == "test") & ~is_member] += 10  # test non-members now all score high
    m2 = evaluate_scores(is_member, shifted, split, n_boot=0)
    assert m2["fpr@1%fpr_achieved"] == 1.0 and m2["tpr@1%fpr_oracle"] < 0.05
    assert rates_at(is_member, scores, 0.0).n_pos == n


def test_bad_input():
    with pytest.raises(ValueError, match="both members and non-members"):
        auc([1, 1], [0.1, 0.2])
    with pytest.raises(ValueError, match="NaN"):
        auc([1, 0], [np.nan, 0.2])


def test_risk_summary_names_generations_and_set_level_exposure():
    from diffmia.evaluate.report import risk_summary

    row = {
        "attack": "rediffuse",
        "access": "black-box",
        "queries_per_sample": 100,
        "generations_per_sample": 10,
        "tpr@1%fpr": 0.05,
        "tpr@1%fpr_ci_lo": 0.01,
        "tpr@1%fpr_ci_hi": 0.13,
        "fpr@1%fpr_achieved": 0.0,
        "fpr@1%fpr_achieved_ci_hi": 0.056,
        "auc": 0.66,
        "auc_ci_lo": 0.57,
        "auc_ci_hi": 0.75,
        "epsilon_lower_bound": 0.0,
        "defenses": "lora",
    }
    curves = {
        "rediffuse": [{"set_size": 1, "auc": 0.65}, {"set_size": 30, "auc": 0.999}],
        "sd_mia": [{"set_size": 1, "auc": 0.43}, {"set_size": 30, "auc": 0.05}],
    }
    info = {"counts": {"members": 128, "nonmembers": 128}, "set_level": curves}
    text = risk_summary("lora-r4", [row], info, 1e-5)
    assert text.startswith("lora-r4: MODERATE") and "100 model queries (10 generated images) per image" in text
    assert "sets of 30 images, rediffuse separates" in text and "AUC 0.999" in text and "collection" in text
    assert "(best single-image AUC 0.650)" in text
    weak = risk_summary("x", [row], {**info, "set_level": {"a": [{"set_size": 5, "auc": 0.6}]}}, 1e-5)
    assert "sets of 5 images" in weak and "collection" not in weak
    plain = risk_summary("x", [{**row, "generations_per_sample": 0}], {"counts": info["counts"]}, 1e-5)
    assert "100 model queries per image" in plain and "Set level" not in plain


def test_oracle_tpr_keeps_corners_on_straight_stretches_of_the_roc():
    """Tied member/non-member pairs make equal (1, 1) steps; roc_curve's drop_intermediate drops their middle corners,
    and the best TPR at FPR <= 50% (threshold 2: 2 of 4 members, 2 of 4 non-members) would read 25%."""
    from diffmia.evaluate.metrics import tpr_of

    labels = np.r_[np.ones(4, bool), np.zeros(4, bool)]
    scores = np.r_[[3.0, 2.0, 1.0, 0.0], [3.0, 2.0, 1.0, 0.0]]
    assert tpr_at_fpr(labels, scores, 0.5) == 0.5
    assert tpr_of(scores[:4], scores[4:], 0.5) == 0.5


def test_counting_auc_and_tpr_equal_scikit_learn_with_ties():
    """The bootstrap's fast statistics give scikit-learn's values on tie-heavy random scores."""
    from diffmia.evaluate.metrics import auc_of, tpr_of

    rng = np.random.default_rng(3)
    for trial in range(300):
        n_pos, n_neg = rng.integers(1, 40), rng.integers(1, 200)
        pos, neg = rng.normal(size=n_pos) + 0.5, rng.normal(size=n_neg)
        if trial % 2:  # coarse grid: many ties within and across the two groups
            pos, neg = np.round(pos * 4) / 4, np.round(neg * 4) / 4
        labels, scores = np.r_[np.ones(n_pos, bool), np.zeros(n_neg, bool)], np.r_[pos, neg]
        assert auc_of(pos, neg) == pytest.approx(auc(labels, scores), abs=1e-12)
        for fpr in (0.0, 0.001, 0.01, 0.1, 0.5, 1.0, 1 / n_neg):
            assert tpr_of(pos, neg, fpr) == tpr_at_fpr(labels, scores, fpr)


def test_an_unresolvable_rate_is_never_printed_as_a_number():
    """TPR at 0.1% FPR on 128 test non-members (one false positive is already 0.8%) reads 'not measurable'."""
    from diffmia.evaluate.report import _rate_cell

    row = {"n_test_nonmembers": 128, "tpr@0.1%fpr": 0.586, "tpr@0.1%fpr_ci_lo": 0.496, "tpr@0.1%fpr_ci_hi": 0.672}
    assert _rate_cell(row, 0.001) == "not measurable (needs >= 1000 test non-members; 128 here)"
    assert _rate_cell(dict(row, n_test_nonmembers=1000), 0.001) == "58.6% [49.6%, 67.2%]"
