"""Noise aggregation after small-noise injection — the headline gray-box attack (arXiv 2510.21783).

Inject one small Gaussian noise into the image (timestep T, or a noise std sigma mapped to the nearest timestep), then
walk k deterministic DDIM steps of stride m (t = T, T-m, ..., T-(k-1)m). The k noise predictions made on the way
cluster tightly for training members and scatter for non-members. The spread C(E) of the set E = {e_0..e_{k-1}} is
measured by one of six aggregations, and the score is S = -log(C + delta) (for `density`, which grows as the set
tightens, S = +log(C + delta), so that higher still means member). Exactly k queries per image per noise draw.

Aggregations over the flattened predictions (B, k, D):
  l2       mean over pairs i<j of ||e_i - e_j||_2 (default)
  l1       mean over pairs of ||e_i - e_j||_1
  mse      mean over pairs of ||e_i - e_j||_2^2
  centroid (1/k) sum_i ||e_i - mean(E)||_2
  density  (1/k) sum_i 1 / (d_i + delta), d_i the L2 distance from e_i to its nearest neighbour in E
  hull     the (k-1)-volume of the simplex spanned by E: sqrt(det Gram(e_1-e_0, ..., e_{k-1}-e_0)) / (k-1)!
           (the convex hull of k points in D >> k dimensions is that simplex; computed in log space)
"""

from __future__ import annotations

import math
from typing import Literal, Optional

import torch
from pydantic import Field

from diffmia.core.config import ConfigError

from .base import Attack, AttackBatch, AttackParams, add_noise, ddim_move, register_attack

AGGREGATIONS = ("l2", "l1", "mse", "centroid", "density", "hull")


class NoiseAggregationParams(AttackParams):
    timestep: int = Field(80, ge=1, le=999, description="injection timestep T")
    sigma: Optional[float] = Field(None, gt=0.0, lt=1.0, description="noise std; overrides timestep when set")
    k: int = Field(5, ge=2, le=50, description="number of noise predictions (queries per draw)")
    stride: int = Field(10, ge=1, le=500, description="DDIM stride m between predictions")
    aggregation: Literal["l2", "l1", "mse", "centroid", "density", "hull"] = "l2"
    delta: float = Field(1e-8, gt=0.0, description="small constant inside the log")
    draws: int = Field(1, ge=1, le=100, description="noise draws R; scores are averaged over them")


def pairwise(E: torch.Tensor, p: float) -> torch.Tensor:
    """(B, k, D) -> (B, k, k) pairwise p-norm distances."""
    return torch.cdist(E, E, p=p)


def upper_pairs_mean(dist: torch.Tensor) -> torch.Tensor:
    k = dist.shape[-1]
    iu = torch.triu_indices(k, k, offset=1, device=dist.device)
    return dist[:, iu[0], iu[1]].mean(-1)


def spread(E: torch.Tensor, aggregation: str, delta: float) -> torch.Tensor:
    """The aggregation C(E) for flattened predictions E of shape (B, k, D); float64 for stable small distances."""
    E = E.double()
    if aggregation == "l2":
        return upper_pairs_mean(pairwise(E, 2.0))
    if aggregation == "l1":
        return upper_pairs_mean(pairwise(E, 1.0))
    if aggregation == "mse":
        return upper_pairs_mean(pairwise(E, 2.0) ** 2)
    if aggregation == "centroid":
        return (E - E.mean(1, keepdim=True)).norm(dim=-1).mean(-1)
    if aggregation == "density":
        dist = pairwise(E, 2.0)
        dist = dist + torch.diag_embed(torch.full(dist.shape[:2], float("inf"), dtype=dist.dtype, device=dist.device))
        return (1.0 / (dist.min(-1).values + delta)).mean(-1)
    if aggregation == "hull":
        return log_simplex_volume(E).exp()
    raise ValueError(f"unknown aggregation {aggregation!r}; known: {', '.join(AGGREGATIONS)}")


def log_simplex_volume(E: torch.Tensor) -> torch.Tensor:
    """log of the (k-1)-volume of the simplex with vertices E (B, k, D)."""
    V = E[:, 1:] - E[:, :1]
    gram = V @ V.transpose(1, 2)
    sign, logdet = torch.linalg.slogdet(gram)
    logdet = torch.where(sign > 0, logdet, torch.full_like(logdet, -float("inf")))
    return 0.5 * logdet - math.lgamma(E.shape[1])


def aggregate_score(E: torch.Tensor, aggregation: str, delta: float) -> torch.Tensor:
    """S = -log(C(E) + delta); +log for density, whose C grows as the predictions cluster."""
    if aggregation == "hull":  # log(V + delta) without leaving log space: V can underflow
        log_c = torch.logaddexp(
            log_simplex_volume(E.double()), torch.tensor(math.log(delta), dtype=torch.float64, device=E.device)
        )
    else:
        log_c = torch.log(spread(E, aggregation, delta) + delta)
    return (log_c if aggregation == "density" else -log_c).float()


@register_attack
class NoiseAggregation(Attack):
    name = "noise_aggregation"
    access = "gray-box"
    paper = "Noise aggregation after small-noise injection, arXiv 2510.21783"
    Params = NoiseAggregationParams

    def check(self, params: NoiseAggregationParams) -> None:
        """A fixed T must leave room for the k-step walk (with sigma, T comes from the target's schedule: checked
        when the attack meets it)."""
        last = params.timestep - (params.k - 1) * params.stride
        if params.sigma is None and last < 0:
            raise ConfigError(
                f"attack noise_aggregation: T={params.timestep} - (k-1)*stride = {last} < 0; lower k or "
                f"stride, or raise T"
            )

    def start_timestep(self, target) -> int:
        p = self.params
        return target.timestep_for_sigma(p.sigma) if p.sigma is not None else p.timestep

    def timesteps(self, target) -> list[int]:
        start = self.start_timestep(target)
        steps = [start - i * self.params.stride for i in range(self.params.k)]
        if steps[-1] < 0:
            raise ConfigError(
                f"attack noise_aggregation: T={start} - (k-1)*stride = {steps[-1]} < 0; lower k or stride, or raise T"
            )
        return steps

    def timesteps_used(self) -> list[int]:
        return [] if self.params.sigma is not None else [self.params.timestep]  # sigma: mapped on the target's schedule

    def queries_per_sample(self, target) -> int:
        return self.params.k * self.params.draws

    def predictions(self, target, batch: AttackBatch, draw: int = 0) -> torch.Tensor:
        """The k noise predictions along the DDIM walk, (B, k, D)."""
        steps = self.timesteps(target)
        z = target.encode(batch.images)
        x = add_noise(target, z, self.noise(batch, z.shape[1:], draw), steps[0])
        preds = []
        for i, t in enumerate(steps):
            e = target.predict_noise(x, t, batch.captions)
            preds.append(e.flatten(1))
            if i + 1 < len(steps):
                x = ddim_move(x, e, target.alpha_bar(t), target.alpha_bar(steps[i + 1]))
        return torch.stack(preds, dim=1)

    def score(self, target, batch: AttackBatch) -> torch.Tensor:
        p = self.params
        total = torch.zeros(len(batch.ids), device=batch.device)
        for draw in range(p.draws):
            total += aggregate_score(self.predictions(target, batch, draw), p.aggregation, p.delta)
        return total / p.draws
