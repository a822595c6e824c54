"""SecMI, statistical variant (Duan et al., "Are Diffusion Models Vulnerable to Membership Inference Attacks?",
arXiv 2302.01316).

1. Deterministic DDIM inversion of the clean image from t=0 to t_sec with stride s: t_sec/s queries.
2. From x_{t_sec}, one deterministic denoising step to t_sec - s (1 query) and one inversion step back (1 query).
3. S = -||x_{t_sec} - x'_{t_sec}||^2, the posterior-estimation error: members are reconstructed more faithfully.
Queries: t_sec/s + 2 (12 with the defaults t_sec=100, s=10). No randomness: scores do not depend on the seed.
"""
from __future__ import annotations

import torch
from pydantic import Field

from diffmia.config import ConfigError

from .base import Attack, AttackBatch, AttackParams, ddim_move, register_attack


class SecMIParams(AttackParams):
    timestep: int = Field(100, ge=1, le=999, description="t_sec, where the error is measured")
    stride: int = Field(10, ge=1, le=500, description="DDIM stride s of the inversion and of the round trip")


@register_attack
class SecMI(Attack):
    name = "secmi"
    access = "gray-box"
    paper = "Duan et al., SecMI (stat), arXiv 2302.01316"
    Params = SecMIParams

    def check(self, params: SecMIParams) -> None:
        if params.timestep % params.stride or params.timestep < params.stride:
            raise ConfigError(f"attack secmi: timestep {params.timestep} must be a positive multiple of stride {params.stride}")

    def queries_per_sample(self, target) -> int:
        return self.params.timestep // self.params.stride + 2

    def score(self, target, batch: AttackBatch) -> torch.Tensor:
        t_sec, s = self.params.timestep, self.params.stride
        x = target.encode(batch.images)
        for t in range(0, t_sec, s):  # inversion 0 -> s -> ... -> t_sec
            eps = target.predict_noise(x, t, batch.captions)
            x = ddim_move(x, eps, target.alpha_bar(t), target.alpha_bar(t + s))
        eps = target.predict_noise(x, t_sec, batch.captions)
        x_back = ddim_move(x, eps, target.alpha_bar(t_sec), target.alpha_bar(t_sec - s))
        eps = target.predict_noise(x_back, t_sec - s, batch.captions)
        x_again = ddim_move(x_back, eps, target.alpha_bar(t_sec - s), target.alpha_bar(t_sec))
        return -((x - x_again) ** 2).flatten(1).sum(1)
