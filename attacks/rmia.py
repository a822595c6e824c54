"""RMIA: robust membership inference with a population (Zarifzadeh et al., "Low-Cost High-Power Membership Inference
Attacks", arXiv 2312.03262; official code privacytrustlab/ml_privacy_meter `run_rmia` / `tune_offline_a`, and the
paper's code `research/2024_rmia/main.py`).

For population points z (known non-members: the whole public split by default),
LR(x, z) = [Pr(x | theta) / Pr(x)] / [Pr(z | theta) / Pr(z)], and the score of x is the fraction of z with
LR(x, z) > gamma (gamma 2, the paper code's default; strict, as both official codes write it).

- The signal Pr(x | theta) must be a probability in [0, 1] (the official code feeds softmax values; the offline
  intercept (1 - a) / 2 assumes that scale). A diffusion model gives a denoising loss, not a probability, and any
  scale tau in exp(-L / tau) changes the ranking once the intercept is added. So `signal: rank` (default) makes it
  scale-free: Pr(x | theta) = (1 + #{z in the population, z != x : L_theta(z) >= L_theta(x)}) / (1 + |population|),
  the share of the population that the model fits no better than x, on each model (target and references) and each
  noise draw. Any monotone transform of the losses leaves every score unchanged (tested). `signal: exp` is
  exp(-L / tau) with an explicit `tau`, recorded with the scores (tune it on the calibration split with `tune:`).
- Pr(x) over the references is their trimmed mean (`proportiontocut` 0.2 of each side, the paper code's; with 4 or
  fewer references nothing is cut). Online (every pool image IN half the references, paired): Pr(x) = the trimmed mean
  over all of them. Offline (references trained on public subsets only): Pr(x) ~ ((1 + a) Pr_out(x) + (1 - a)) / 2
  with Pr_out the trimmed mean over the references x is OUT of; `a` fitted by attacking reference 0 with the others
  (its own public training images against the rest of the public split; `tune_offline_a`'s grid 0, 0.1, ..., 1 and
  AUC), 0.3 (the paper code's configs) with one reference. A population point IN every reference has no OUT signal and
  is left out of the population.
- Each noise draw is one query, as each augmentation is in the paper code: the comparison LR > gamma is made per draw
  and the draws vote (a strict majority; a tie votes no, as the paper code's torch.mode picks the smaller value).
Queries per audited image: `draws` on the target; the population's and the references' queries are reported apart.
"""

from __future__ import annotations

from typing import Literal, Optional

import numpy as np
import torch
from pydantic import Field, model_validator

from .base import AttackBatch, AttackParams, batch_of, register_attack
from .reference_attack import ReferenceAttack
from .statistics import denoising_losses


class RMIAParams(AttackParams):
    references: int = Field(4, ge=1, le=256)
    mode: Literal["online", "offline"] = "offline"
    timestep: int = Field(100, ge=0, le=9999)
    draws: int = Field(4, ge=1, le=64, description="noise draws, one query each; the draws vote per (x, z)")
    gamma: float = Field(
        2.0, gt=0.0, description="likelihood-ratio threshold against each population point (paper code: 2)"
    )
    a: Optional[float] = Field(
        None, ge=0.0, le=1.0, description="offline Pr(x) approximation (None: fit on a reference)"
    )
    proportiontocut: float = Field(0.2, ge=0.0, lt=0.5, description="trimmed mean over references: share cut per side")
    population: Optional[int] = Field(
        None,
        ge=10,
        le=1_000_000,
        description="public images used as population points z (None: the whole public split)",
    )
    signal: Literal["rank", "exp"] = Field(
        "rank", description="Pr(x | theta) from the loss: scale-free rank, or exp(-loss / tau)"
    )
    tau: Optional[float] = Field(None, gt=0.0, description="signal exp: the loss scale (required there)")

    @model_validator(mode="after")
    def _tau(self) -> "RMIAParams":
        if self.signal == "exp" and self.tau is None:
            raise ValueError(
                "signal exp needs an explicit tau (tune it on the calibration split with tune: {tau: "
                "[...]}), or use signal rank"
            )
        if self.signal == "rank" and self.tau is not None:
            raise ValueError("tau applies to signal exp only")
        return self


def trimmed_mean(values: np.ndarray, keep: np.ndarray, proportiontocut: float) -> np.ndarray:
    """scipy.stats.trim_mean over axis 0 of `values` (N, ...) using only the entries where `keep` (N, n) is true;
    NaN where a column keeps none."""
    mask = np.broadcast_to(keep.reshape(keep.shape + (1,) * (values.ndim - keep.ndim)), values.shape)
    ordered = np.sort(np.where(mask, values, np.inf), axis=0)  # kept values first, in order
    count = mask.sum(0)
    cut = np.floor(proportiontocut * count).astype(int)
    rank = np.arange(len(values)).reshape((-1,) + (1,) * (values.ndim - 1))
    inside = (rank >= cut) & (rank < count - cut)
    total = np.where(inside, ordered, 0.0).sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count - 2 * cut > 0, total / (count - 2 * cut), np.nan)


def marginal(ref_signals: np.ndarray, out: np.ndarray, offline: bool, a: float, proportiontocut: float) -> np.ndarray:
    """Pr(x) from the references' signals (N, n, draws): online the trimmed mean over all of them, offline
    ((1 + a) Pr_out(x) + (1 - a)) / 2 with Pr_out over the references x is OUT of (`out`, (N, n))."""
    if not offline:
        return trimmed_mean(ref_signals, np.ones(out.shape, bool), proportiontocut)
    return (1 + a) / 2 * trimmed_mean(ref_signals, out, proportiontocut) + (1 - a) / 2


def rmia_scores(
    target_x: np.ndarray,
    ref_x: np.ndarray,
    out_x: np.ndarray,
    target_z: np.ndarray,
    ref_z: np.ndarray,
    out_z: np.ndarray,
    offline: bool,
    a: float,
    gamma: float,
    proportiontocut: float,
    batch: int = 1024,
) -> np.ndarray:
    """RMIA's score of each x: the share of population points z with LR(x, z) > gamma, voted over draws.

    Args:
        target_x: (n_x, draws) Pr(x | theta) on the target; ref_x: (N, n_x, draws) on the references; out_x: (N, n_x)
            whether x is OUT of each reference.
        target_z, ref_z, out_z: the same for the population points.
        offline: Pr(x) from the OUT references with the intercept `a`; else from all references.
        gamma: the likelihood-ratio threshold; proportiontocut: the trimmed mean's cut per side.

    Returns:
        (n_x,) scores in [0, 1], higher = member; NaN for an x with no OUT reference (offline).
    """
    ratio_x = target_x / marginal(ref_x, out_x, offline, a, proportiontocut)  # (n_x, draws)
    ratio_z = target_z / marginal(ref_z, out_z, offline, a, proportiontocut)  # (n_z, draws)
    ratio_z = ratio_z[~np.isnan(ratio_z).any(1)]  # a population point with no OUT reference is left out
    draws = ratio_x.shape[1]
    out = np.empty(len(ratio_x))
    for start in range(0, len(ratio_x), batch):
        rows = ratio_x[start : start + batch]
        votes = sum((rows[:, d, None] / ratio_z[None, :, d] > gamma).astype(np.int32) for d in range(draws))
        out[start : start + batch] = (2 * votes > draws).mean(1)
    return np.where(np.isnan(ratio_x).any(1), np.nan, out)  # no OUT reference for x: no score


def rank_signal(losses: np.ndarray, population_losses: np.ndarray, in_population: np.ndarray) -> np.ndarray:
    """Pr(x | theta) = (1 + #{z != x : L(z) >= L(x)}) / (1 + |population|), per draw: losses (n, draws),
    population_losses (n_z, draws) on the same model; `in_population` (n,) marks x that are themselves z."""
    out = np.empty_like(losses, dtype=np.float64)
    for d in range(losses.shape[1]):
        ordered = np.sort(population_losses[:, d])
        at_or_above = len(ordered) - np.searchsorted(ordered, losses[:, d], side="left")
        out[:, d] = (1 + at_or_above - in_population) / (1 + len(ordered))
    return out


@register_attack
class RMIA(ReferenceAttack):
    name = "rmia"
    paper = "Zarifzadeh et al., RMIA, arXiv 2312.03262 (official code privacytrustlab/ml_privacy_meter)"
    Params = RMIAParams

    def queries_per_sample(self, target) -> int:
        return self.params.draws

    def losses(self, model, batch: AttackBatch) -> np.ndarray:
        return denoising_losses(model, batch, self.params.timestep, self.params.draws, self.seed)

    def signal(self, losses: np.ndarray, population_losses: np.ndarray, in_population: np.ndarray) -> np.ndarray:
        if self.params.signal == "exp":
            return np.exp(-losses / self.params.tau)
        return rank_signal(losses, population_losses, in_population)

    def prepare(self, loaded, cache_dir) -> None:
        from diffmia.targets.references import pool_indices

        p = self.params
        refs = self.build_references(loaded, p.mode)
        public = loaded.manifest.indices("public")
        population = (
            public
            if p.population is None
            else sorted(np.random.default_rng([self.seed, 307]).permutation(public)[: p.population].tolist())
        )
        if p.mode == "offline":  # a point IN every reference has no OUT signal
            population = [z for z, out in zip(population, (~refs.is_in(population)).any(0)) if out]
        ids = sorted(set(pool_indices(loaded.manifest)) | set(public))  # public: population and the a-fit's candidates
        self.position = {i: k for k, i in enumerate(ids)}
        zk = self.positions(population)
        in_population = np.isin(ids, population)
        everyone = batch_of(loaded, ids)

        def reference_signals(r, ref):
            losses = self.losses(ref, everyone)
            return self.signal(losses, losses[zk], in_population)

        self.ref_signals = np.stack(self.over_references(loaded, reference_signals))
        self.is_out = ~refs.is_in(ids)
        before = loaded.target.queries.sample_queries
        self.population_losses = self.losses(loaded.target, batch_of(loaded, population))
        self.population_queries = loaded.target.queries.sample_queries - before
        self.population = population
        self.a = p.a if p.a is not None else (self.fit_a(public) if p.mode == "offline" and len(refs) > 1 else 0.3)
        self.target_z = self.signal(self.population_losses, self.population_losses, np.ones(len(population), bool))
        self.zk = zk

    def attack(
        self, target_x: np.ndarray, k: np.ndarray, refs: np.ndarray, target_z: np.ndarray, zk: np.ndarray, a: float
    ) -> np.ndarray:
        """rmia_scores for the ids at positions k against the population at positions zk, with references `refs`."""
        p = self.params
        return rmia_scores(
            target_x,
            self.ref_signals[refs][:, k],
            self.is_out[refs][:, k],
            target_z,
            self.ref_signals[refs][:, zk],
            self.is_out[refs][:, zk],
            p.mode == "offline",
            a,
            p.gamma,
            p.proportiontocut,
        )

    def fit_a(self, public: list[int]) -> float:
        """Attack reference 0 with the others: its public training images vs the rest of the public split (the
        official tune_offline_a's grid and AUC)."""
        from sklearn.metrics import roc_auc_score

        k = self.positions(public)
        labels = ~self.is_out[0, k]
        if labels.all() or not labels.any():
            return 0.3
        others = np.arange(1, len(self.ref_signals))
        z = k[~labels]  # reference 0's own non-members are its population
        best, best_auc = 0.3, -1.0
        for a in np.round(np.arange(0, 1.1, 0.1), 2):
            scores = self.attack(self.ref_signals[0, k], k, others, self.ref_signals[0, z], z, float(a))
            keep = ~np.isnan(scores)
            auc = roc_auc_score(labels[keep], scores[keep]) if keep.any() else -1.0
            if auc > best_auc:
                best, best_auc = float(a), float(auc)
        self.a_fit = {"a": best, "reference_auc": best_auc}
        return best

    def score(self, target, batch: AttackBatch) -> torch.Tensor:
        k = self.positions(batch.ids)
        target_x = self.signal(self.losses(target, batch), self.population_losses, np.isin(batch.ids, self.population))
        scores = self.attack(target_x, k, np.arange(len(self.ref_signals)), self.target_z, self.zk, self.a)
        return torch.as_tensor(scores, dtype=torch.float32)

    def extra_info(self) -> dict:
        info = super().extra_info()
        info.update(
            {
                "a": getattr(self, "a", None),
                "signal": self.params.signal,
                "tau": self.params.tau,
                "population": len(getattr(self, "population", [])),
                "population_queries": getattr(self, "population_queries", 0),
            }
        )
        if hasattr(self, "a_fit"):
            info["a_fit"] = self.a_fit
        return info
