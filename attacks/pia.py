"""PIA and PIAN: proximal initialisation attacks (Kong et al., arXiv 2305.18355), as the official code computes them
(kong13661/PIA, DDPM/components.py).

e0 = eps_theta(x0, 0) is taken as the noise; x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) e0 at t=200;
S = -sum |e0 - eps_theta(x_t, t)|^p with p=4 (the official distance: the p-th power summed, no root). Two queries, no
randomness. PIAN rescales e0 per image by its mean absolute value, e0 / mean(|e0|) * sqrt(2/pi), so that it has the
mean absolute value of a standard normal, before it is used as the noise.
"""

from __future__ import annotations

import math

import torch
from pydantic import Field

from .base import Attack, AttackBatch, AttackParams, add_noise, register_attack


class PIAParams(AttackParams):
    timestep: int = Field(
        200, ge=1, le=999, description="timestep t of the second query (official: 200 on DDPMs, 500 on SD)"
    )
    norm: float = Field(4.0, ge=1.0, le=16.0, description="p of the sum of |difference|^p (4 in the paper)")


def pian_rescale(e0: torch.Tensor) -> torch.Tensor:
    """The official PIAN normalisation: e0 / mean(|e0|) * sqrt(2 / pi), per image."""
    scale = e0.abs().mean(dim=tuple(range(1, e0.ndim)), keepdim=True).clamp_min(1e-12)
    return e0 / scale * math.sqrt(2.0 / math.pi)


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
            e0 = pian_rescale(e0)
        x_t = add_noise(target, x0, e0, t)
        pred = target.predict_noise(x_t, t, batch.captions)
        return -((pred - e0).abs() ** self.params.norm).flatten(1).sum(1)


@register_attack
class PIA(_ProximalInitialisation):
    name = "pia"


@register_attack
class PIAN(_ProximalInitialisation):
    name = "pian"
    normalise = True
