"""PIA and PIAN: proximal initialisation attacks (Kong et al., arXiv 2305.18355).

e0 = eps_theta(x0, 0) is taken as the noise; x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) e0 at t=200;
S = -||e0 - eps_theta(x_t, t)||_p with p=4 by default. Two queries, no randomness.
PIAN replaces e0 by e0 rescaled per image to the L2 norm a standard Gaussian of that size has on average,
sqrt(D) (our reading of "rescaled to Gaussian norm"; the rescaling is by a positive scalar per image).
"""
from __future__ import annotations

import torch
from pydantic import Field

from .base import Attack, AttackBatch, AttackParams, add_noise, register_attack


class PIAParams(AttackParams):
    timestep: int = Field(200, ge=1, le=999, description="timestep t of the second query")
    norm: float = Field(4.0, ge=1.0, le=16.0, description="p of the l_p distance (4 in the paper)")


class _ProximalInitialisation(Attack):
    access = "gray-box"
    paper = "Kong et al., PIA / PIAN, arXiv 2305.18355"
    Params = PIAParams
    normalise = False

    def queries_per_sample(self, target) -> int:
        return 2

    def score(self, target, batch: AttackBatch) -> torch.Tensor:
        t = self.params.timestep
        x0 = target.encode(batch.images)
        e0 = target.predict_noise(x0, 0, batch.captions)
        if self.normalise:
            flat = e0.flatten(1)
            e0 = e0 * (flat.shape[1] ** 0.5 / flat.norm(dim=1).clamp_min(1e-12)).view(-1, *[1] * (e0.ndim - 1))
        x_t = add_noise(target, x0, e0, t)
        pred = target.predict_noise(x_t, t, batch.captions)
        return -torch.linalg.vector_norm((pred - e0).flatten(1), ord=self.params.norm, dim=1)


@register_attack
class PIA(_ProximalInitialisation):
    name = "pia"


@register_attack
class PIAN(_ProximalInitialisation):
    name = "pian"
    normalise = True
