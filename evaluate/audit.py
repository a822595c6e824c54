"""One-run privacy auditing (Steinke, Nasr, Jagielski, "Privacy Auditing with One (1) Training Run", arXiv 2305.08846).

m canaries are each trained on by an independent fair coin in ONE training run. After scoring, the auditor guesses IN
for the k+ highest-scoring canaries and OUT for the k- lowest: r = k+ + k- guesses, v of them correct. If training is
(eps, delta)-DP, the number of correct guesses is stochastically dominated (Theorem 3.1 of the paper) so that

    p(eps) = Pr[Binomial(r, q) >= v] + alpha * delta * 2m,   q = e^eps / (1 + e^eps),
    alpha  = max_{i = 1..v} Pr[v > Binomial(r, q) >= v - i] / i

is a valid p-value for "(eps, delta)-DP holds". The empirical lower bound is the largest eps rejected at level 0.05,
i.e. sup{eps : p(eps) < 0.05} (p grows with eps). Choosing (k+, k-) after looking at the scores is paid for by a
Bonferroni correction over the grid of choices tried: each is tested at 0.05 / len(grid).

This bound is valid for one model and one split, unlike the single-threshold bound of Jagielski et al. (which
assumes independent repeated trials; kept in the tables only as a labelled heuristic).

One attack's bound is valid at 95% for that attack alone. The largest of A attacks' bounds, each at 5%, is valid only
at 1 - 0.05 A, so the recipe's headline figure comes from `headline_audit`, a pre-registered split: the canaries are
cut in two by a seeded permutation; on the selection half every attack and every (k+, k-) of the grid is tried and the
best is chosen; the epsilon is then computed on the other half alone, for that one attack and guess count, at the full
level (one test, no correction). The choice used the selection half's scores and coins only, which are independent of
the test half's coins, so it is part of the guesser and the bound is valid at 1 - level for the recipe as a whole.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.special import bdtr, bdtrc


def p_value(eps: float, r: int, v: int, m: int, delta: float = 0.0) -> float:
    """The p-value of the paper's Theorem for r guesses with v correct among m canaries under (eps, delta)-DP."""
    if r == 0 or v == 0:
        return 1.0
    q = math.exp(eps) / (1.0 + math.exp(eps))
    p = float(bdtrc(v - 1, r, q))  # Pr[Binomial(r, q) >= v] (scipy.special: binom.sf without its overhead)
    if delta > 0:
        # Pr[v > B >= v - i] = cdf(v - 1) - cdf(v - i - 1)
        cdf = np.concatenate([[0.0], bdtr(np.arange(0, v), r, q)])  # cdf[j + 1] = Pr[B <= j]
        alpha = max((cdf[v] - cdf[v - i]) / i for i in range(1, v + 1))
        p += alpha * delta * 2 * m
    return min(p, 1.0)


def epsilon_lower_bound(
    r: int, v: int, m: int, delta: float = 0.0, level: float = 0.05, eps_max: float = 50.0
) -> float:
    """sup{eps >= 0 : p(eps) < level}; 0 when even eps = 0 is not rejected."""
    if r == 0 or v == 0 or bdtrc(v - 1, r, 0.5) >= level:  # the delta term only adds: not rejected at eps = 0
        return 0.0
    if p_value(0.0, r, v, m, delta) >= level:
        return 0.0
    lo, hi = 0.0, eps_max
    if p_value(hi, r, v, m, delta) < level:
        return hi
    for _ in range(60):
        mid = (lo + hi) / 2
        if p_value(mid, r, v, m, delta) < level:
            lo = mid
        else:
            hi = mid
    return lo


def guess_grid(m: int) -> list[tuple[int, int]]:
    """The (k+, k-) choices tried: abstaining on most canaries is how the audit gets its power."""
    sizes = sorted({k for k in (5, 10, 20, 50, 100, 200, 500, 1000) if k <= m // 2} | ({m // 2} if m >= 2 else set()))
    return [(kp, km) for kp in sizes for km in [0] + sizes]


@dataclass
class OneRunAudit:
    epsilon: float  # the lower bound, Bonferroni-corrected over the grid
    k_plus: int
    k_minus: int
    guesses: int
    correct: int
    canaries: int
    grid_size: int
    delta: float
    level: float

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def canary_audit(frame, delta: float = 0.0, level: float = 0.05) -> OneRunAudit | None:
    """The one-run audit of a score file's canary rows (split "canary", is_member = the coin); None without them."""
    canary = frame[frame.split == "canary"]
    return one_run_audit(canary.score, canary.is_member, delta, level)


def one_run_audit(scores, included, delta: float = 0.0, level: float = 0.05) -> OneRunAudit | None:
    """The one-run epsilon lower bound from canary scores (higher = more likely IN) and their coin flips.
    None without canaries."""
    scores = np.asarray(scores, dtype=np.float64)
    included = np.asarray(included).astype(bool)
    m = len(scores)
    if m < 2:
        return None
    order = np.argsort(-scores, kind="stable")
    grid = guess_grid(m)
    corrected = level / len(grid)
    best = None
    for kp, km in grid:
        top, bottom = order[:kp], order[m - km :] if km else order[:0]
        v = int(included[top].sum() + (~included[bottom]).sum())
        eps = epsilon_lower_bound(kp + km, v, m, delta, corrected)
        if best is None or eps > best.epsilon:
            best = OneRunAudit(eps, kp, km, kp + km, v, m, len(grid), delta, level)
    return best


@dataclass
class HeadlineAudit:
    """The recipe's one valid epsilon: attack and guess counts chosen on one half of the canaries, epsilon computed on
    the other half (see the module docstring)."""

    epsilon: float
    attack: str
    k_plus: int
    k_minus: int
    guesses: int
    correct: int
    canaries: int  # in the half the epsilon was computed on
    selection_canaries: int  # in the half the attack and guess counts were chosen on
    attacks: int  # candidates the choice was made among
    delta: float
    level: float
    procedure: str = "split"

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def headline_audit(
    canaries: dict[str, tuple], delta: float = 0.0, level: float = 0.05, seed: int = 0
) -> HeadlineAudit | None:
    """The headline one-run epsilon over several attacks, valid at 1 - level for all of them together.

    Args:
        canaries: attack label -> (canary ids, scores (higher = more likely IN), coins); every attack scores the same
            canaries (those missing from one attack are left out of all).
        delta: the delta of the (eps, delta) tested.
        level: the significance level of the one test made on the held-out half.
        seed: the seed of the split into a selection and a test half.

    Returns:
        The HeadlineAudit, or None when fewer than 4 canaries are shared by the attacks.
    """
    if not canaries:
        return None
    frames = {}
    for label, (ids, scores, coins) in canaries.items():
        ids = np.asarray(ids, dtype=np.int64)
        frames[label] = dict(
            zip(ids.tolist(), zip(np.asarray(scores, dtype=np.float64), np.asarray(coins).astype(bool)))
        )
    shared = sorted(set.intersection(*(set(f) for f in frames.values())))
    if len(shared) < 4:
        return None
    order = np.random.default_rng([seed, 911]).permutation(len(shared))
    cut = len(shared) // 2
    halves = [[shared[i] for i in sorted(order[:cut])], [shared[i] for i in sorted(order[cut:])]]

    def half_arrays(label, half):
        rows = [frames[label][i] for i in halves[half]]
        return np.array([r[0] for r in rows]), np.array([r[1] for r in rows])

    def counts(scores, coins, kp, km):
        rank = np.argsort(-scores, kind="stable")
        bottom = rank[len(scores) - km :] if km else rank[:0]
        return int(coins[rank[:kp]].sum() + (~coins[bottom]).sum())

    m_sel = len(halves[0])
    best = None
    for label in frames:  # selection half: any rule may be used here, the held-out half pays nothing for it
        scores, coins = half_arrays(label, 0)
        for kp, km in guess_grid(m_sel):
            v = counts(scores, coins, kp, km)
            key = (epsilon_lower_bound(kp + km, v, m_sel, delta, level), (v + 1) / (kp + km + 2))
            if best is None or key > best[0]:
                best = (key, label, kp, km)
    _, label, kp, km = best
    scores, coins = half_arrays(label, 1)
    m_test = len(scores)
    v = counts(scores, coins, kp, km)
    return HeadlineAudit(
        epsilon_lower_bound(kp + km, v, m_test, delta, level),
        label,
        kp,
        km,
        kp + km,
        v,
        m_test,
        m_sel,
        len(frames),
        delta,
        level,
    )
