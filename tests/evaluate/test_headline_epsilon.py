"""The recipe's headline one-run epsilon: valid at 95% over several attacks (a pre-registered split), where the
maximum of per-attack bounds is not."""

import numpy as np

from diffmia.evaluate.audit import epsilon_lower_bound, guess_grid, headline_audit, one_run_audit


def test_worked_case_of_the_correction():
    # 1000 canaries, delta 1e-5, 100 guesses with 90 right: one attack's grid vs eight attacks' grids (Bonferroni)
    grid = len(guess_grid(1000))
    assert grid == 56
    assert abs(epsilon_lower_bound(100, 90, 1000, 1e-5, 0.05 / grid) - 1.04) < 0.01
    assert epsilon_lower_bound(100, 90, 1000, 1e-5, 0.05 / (8 * grid)) < 0.01


def _null_audits(n_audits: int, attacks: int, canaries: int, rng) -> tuple[float, float]:
    headline, max_per_attack = 0, 0
    for _ in range(n_audits):
        coins = rng.random(canaries) < 0.5
        ids = np.arange(canaries)
        scores = {f"a{j}": (ids, rng.standard_normal(canaries), coins) for j in range(attacks)}
        audit = headline_audit(scores, delta=1e-5, seed=int(rng.integers(2**31)))
        headline += audit.epsilon > 0
        max_per_attack += max(one_run_audit(s, c, 1e-5).epsilon for _, s, c in scores.values()) > 0
    return headline / n_audits, max_per_attack / n_audits


def test_headline_is_valid_under_the_null():
    """Member-independent canary scores of 6 attacks: the headline exceeds 0 in at most 5% of the audits."""
    rate, naive = _null_audits(400, attacks=6, canaries=200, rng=np.random.default_rng(0))
    # binomial slack for 400 audits at a true rate of 5%: mean 20, sd 4.4; 6% is 24 audits
    assert rate <= 0.06, f"headline epsilon > 0 in {rate:.1%} of null audits (must be <= 5%)"
    print(f"null audits: headline > 0 in {rate:.1%}, maximum of per-attack bounds > 0 in {naive:.1%}")


def test_headline_finds_a_real_signal_and_says_how():
    rng = np.random.default_rng(1)
    m = 400
    coins = rng.random(m) < 0.5
    ids = np.arange(m)
    strong = coins * 3.0 + rng.standard_normal(m)
    scores = {"weak": (ids, rng.standard_normal(m), coins), "strong": (ids, strong, coins)}
    audit = headline_audit(scores, delta=1e-5, seed=0)
    assert audit.attack == "strong" and audit.epsilon > 0.5
    assert audit.canaries + audit.selection_canaries == m and audit.attacks == 2
    assert audit.correct <= audit.guesses <= audit.canaries
    # deterministic, and canaries missing from one attack are left out of all
    assert headline_audit(scores, delta=1e-5, seed=0) == audit
    short = dict(scores, weak=(ids[:300], scores["weak"][1][:300], coins[:300]))
    assert headline_audit(short, delta=1e-5, seed=0).canaries + headline_audit(short, 1e-5).selection_canaries == 300
    assert headline_audit({}, 1e-5) is None
