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
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.stats import binom


def p_value(eps: float, r: int, v: int, m: int, delta: float = 0.0) -> float:
    """The p-value of the paper's Theorem for r guesses with v correct among m canaries under (eps, delta)-DP."""
    if r == 0 or v == 0:
        return 1.0
    q = math.exp(eps) / (1.0 + math.exp(eps))
    p = float(binom.sf(v - 1, r, q))  # Pr[Binomial(r, q) >= v]
    if delta > 0:
        # Pr[v > B >= v - i] = cdf(v - 1) - cdf(v - i - 1)
        cdf = binom.cdf(np.arange(-1, v), r, q)  # cdf[j + 1] = Pr[B <= j]
        alpha = max((cdf[v] - cdf[v - i]) / i for i in range(1, v + 1))
        p += alpha * delta * 2 * m
    return min(p, 1.0)


def epsilon_lower_bound(r: int, v: int, m: int, delta: float = 0.0, level: float = 0.05, eps_max: float = 50.0) -> float:
    """sup{eps >= 0 : p(eps) < level}; 0 when even eps = 0 is not rejected."""
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
        top, bottom = order[:kp], order[m - km:] if km else order[:0]
        v = int(included[top].sum() + (~included[bottom]).sum())
        eps = epsilon_lower_bound(kp + km, v, m, delta, corrected)
        if best is None or eps > best.epsilon:
            best = OneRunAudit(eps, kp, km, kp + km, v, m, len(grid), delta, level)
    return best
