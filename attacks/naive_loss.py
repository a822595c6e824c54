"""Naive loss attack (Matsumoto et al., "Membership Inference Attacks against Diffusion Models", 2023).

S = -||eps - eps_theta(x_t, t)||^2 at one timestep t (intermediate t leaks most), averaged over `draws` noise draws.
One query per draw. Default t = 200: the reference implementation the PIA and SecMI comparisons use (kong13661/PIA's
"naive" attacker on DDPMs; it uses t = 500 on Stable Diffusion). Carlini et al.'s diffusion LiRA uses t = 100; give
`timestep` to change it, and tune it on the calibration split, never on the test halves.
"""

from __future__ import annotations

import torch
from pydantic import Field

from .base import Attack, AttackBatch, AttackParams, add_noise, register_attack


class NaiveLossParams(AttackParams):
    timestep: int = Field(
        200, ge=0, le=999, description="timestep t of the loss (PIA repo reference: 200 DDPM, 500 SD)"
    )
    draws: int = Field(1, ge=1, le=100, description="noise draws averaged")


@register_attack
class NaiveLoss(Attack):
    name = "naive_loss"
    access = "gray-box"
    paper = "Matsumoto, Miura, Yanai: Membership Inference Attacks against Diffusion Models (2023)"
    Params = NaiveLossParams

    def queries_per_sample(self, target) -> int:
        return self.params.draws

    def score(self, target, batch: AttackBatch) -> torch.Tensor:
        t = self.params.timestep
        z = target.encode(batch.images)
        total = torch.zeros(len(batch.ids), device=z.device)
        for draw in range(self.params.draws):
            eps = self.noise(batch, z.shape[1:], draw)
            pred = target.predict_noise(add_noise(target, z, eps, t), t, batch.captions)
            total += ((pred - eps) ** 2).flatten(1).sum(1)
        return -total / self.params.draws
