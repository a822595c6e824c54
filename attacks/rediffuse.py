"""ReDiffuse (Li et al., arXiv 2405.20771): black-box membership inference through image variation.

The image is noised to t=200 and denoised back with deterministic DDIM (`steps` steps), `repeats` times with fresh
noise (through the target's image-variation call only, with the image's caption for text models); the variations are
averaged and S = -||average - x||^2: members are reproduced more faithfully. Queries: repeats * steps denoiser calls.
"""
from __future__ import annotations

import torch
from pydantic import Field

from .base import Attack, AttackBatch, AttackParams, register_attack


class ReDiffuseParams(AttackParams):
    timestep: int = Field(200, ge=1, le=999, description="noise level the image is pushed to")
    repeats: int = Field(10, ge=1, le=100, description="variations averaged")
    steps: int = Field(10, ge=1, le=200, description="DDIM steps back to the image")


@register_attack
class ReDiffuse(Attack):
    name = "rediffuse"
    access = "black-box"
    paper = "Li et al., ReDiffuse, arXiv 2405.20771"
    Params = ReDiffuseParams

    def queries_per_sample(self, target) -> int:
        return self.params.repeats * self.params.steps

    def generations_per_sample(self, target) -> int:
        return self.params.repeats

    def score(self, target, batch: AttackBatch) -> torch.Tensor:
        p = self.params
        total = torch.zeros_like(batch.images)
        for r in range(p.repeats):
            noise = self.noise(batch, target.sample_shape, draw=r)
            total += target.vary(batch.images, p.timestep, p.steps, noise, batch.captions)
        return -((total / p.repeats - batch.images) ** 2).flatten(1).sum(1)
