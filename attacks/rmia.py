"""RMIA: robust membership inference with a population (Zarifzadeh et al., arXiv 2312.03262).

Pr(x | theta) = exp(-L(x) / tau) with L the denoising loss at a fixed timestep over seeded draws (the same draws for
every model) and tau the target's median loss over the population. For population points z (known non-members: the
public split), LR(x, z) = [Pr(x | theta) / Pr(x)] / [Pr(z | theta) / Pr(z)], and the score of x is the fraction of z
with LR(x, z) >= gamma.
- `mode: offline` (default; references trained on the public split only): Pr(x) ~ ((1 + a) Pr_out(x) + (1 - a)) / 2,
  Pr_out(x) the mean over the references x is OUT of; `a` fitted by attacking reference 0 with the others (its own
  public training images against the rest of the public split; the paper's procedure), 0.3 with one reference.
- `mode: online` (every pool image IN half the references): Pr(x) = the mean over all references.
Works with few references (1-4). Queries per audited image: `draws` on the target; the population's and the
references' queries are reported apart.
"""
from __future__ import annotations

from typing import Literal, Optional

import numpy as np
import torch
from pydantic import Field

from .base import AttackBatch, AttackParams, batch_of, register_attack
from .reference_attack import ReferenceAttack
from .statistics import denoising_losses


class RMIAParams(AttackParams):
    references: int = Field(4, ge=1, le=256)
    mode: Literal["online", "offline"] = "offline"
    timestep: int = Field(100, ge=0, le=9999)
    draws: int = Field(4, ge=1, le=64)
    gamma: float = Field(1.0, gt=0.0, description="likelihood-ratio threshold against each population point (paper: 1-2)")
    a: Optional[float] = Field(None, ge=0.0, le=1.0, description="offline Pr(x) approximation (None: fit on a reference)")
    population: int = Field(1000, ge=10, le=1_000_000, description="public images used as population points z")


def rmia_scores(ratio_x: np.ndarray, ratio_z: np.ndarray, gamma: float) -> np.ndarray:
    """Fraction of population points z with ratio_x / ratio_z >= gamma, for each x."""
    sorted_z = np.sort(ratio_z)
    # ratio_z <= ratio_x / gamma  <=>  LR >= gamma
    return np.searchsorted(sorted_z, ratio_x / gamma, side="right") / len(sorted_z)


@register_attack
class RMIA(ReferenceAttack):
    name = "rmia"
    paper = "Zarifzadeh et al., RMIA, arXiv 2312.03262"
    Params = RMIAParams

    def queries_per_sample(self, target) -> int:
        return self.params.draws

    def losses(self, model, batch: AttackBatch) -> np.ndarray:
        return denoising_losses(model, batch, self.params.timestep, self.params.draws, self.seed).mean(1)

    def prepare(self, loaded, cache_dir) -> None:
        from diffmia.targets.references import pool_indices

        p = self.params
        refs = self.build_references(loaded, p.mode)
        public = loaded.manifest.indices("public")
        rng = np.random.default_rng([self.seed, 307])
        self.population = sorted(rng.permutation(public)[: p.population].tolist())
        pool = pool_indices(loaded.manifest)
        ids = sorted(set(pool) | set(public))  # public: population points and the a-fit's candidates
        everyone = batch_of(loaded, ids)
        ref_losses = np.stack(self.over_references(loaded, lambda r, ref: self.losses(ref, everyone)))  # (N, n)
        self.position = {i: k for k, i in enumerate(ids)}
        before = loaded.target.queries.sample_queries
        z_loss = self.losses(loaded.target, batch_of(loaded, self.population))
        self.population_queries = loaded.target.queries.sample_queries - before
        self.tau = float(np.median(z_loss))
        self.is_in = refs.is_in(ids)
        self.pr_refs = np.exp(-ref_losses / self.tau)  # (N, n)
        self.a = p.a if p.a is not None else (self.fit_a(public) if p.mode == "offline" and len(refs) > 1 else 0.3)
        zk = self.positions(self.population)
        self.ratio_z = np.exp(-z_loss / self.tau) / self.marginal(zk, self.a)

    def marginal(self, k: np.ndarray, a: float, exclude: Optional[int] = None) -> np.ndarray:
        """Pr(x) for positions k, optionally leaving reference `exclude` out (the a-fit attacks it)."""
        keep = np.ones(len(self.pr_refs), bool)
        if exclude is not None:
            keep[exclude] = False
        pr, out = self.pr_refs[keep][:, k], ~self.is_in[keep][:, k]
        if self.params.mode == "online":
            return pr.mean(0)
        count = out.sum(0)
        pr_out = np.where(count > 0, (pr * out).sum(0) / np.maximum(count, 1), pr.mean(0))
        return ((1 + a) * pr_out + (1 - a)) / 2

    def fit_a(self, public: list[int]) -> float:
        """Attack reference 0 with the others: its public training images vs the rest of the public split."""
        from sklearn.metrics import roc_auc_score

        k = self.positions(public)
        labels = self.is_in[0, k]
        if labels.all() or not labels.any():
            return 0.3
        z = k[~labels]
        best, best_auc = 0.3, -1.0
        for a in np.round(np.linspace(0.0, 1.0, 11), 2):
            ratio = self.pr_refs[0, k] / self.marginal(k, a, exclude=0)
            ratio_z = self.pr_refs[0, z] / self.marginal(z, a, exclude=0)
            auc = roc_auc_score(labels, rmia_scores(ratio, ratio_z, self.params.gamma))
            if auc > best_auc:
                best, best_auc = float(a), float(auc)
        self.a_fit = {"a": best, "reference_auc": best_auc}
        return best

    def score(self, target, batch: AttackBatch) -> torch.Tensor:
        k = self.positions(batch.ids)
        loss = self.losses(target, batch)
        ratio = np.exp(-loss / self.tau) / self.marginal(k, self.a)
        return torch.as_tensor(rmia_scores(ratio, self.ratio_z, self.params.gamma), dtype=torch.float32)

    def extra_info(self) -> dict:
        info = super().extra_info()
        info.update({"a": getattr(self, "a", None), "tau": getattr(self, "tau", None),
                     "population": len(getattr(self, "population", [])),
                     "population_queries": getattr(self, "population_queries", 0)})
        if hasattr(self, "a_fit"):
            info["a_fit"] = self.a_fit
        return info
