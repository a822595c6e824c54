"""SecMI, statistical variant (Duan et al., "Are Diffusion Models Vulnerable to Membership Inference Attacks?",
arXiv 2302.01316), as the official code computes it (jinhaoduan/SecMI, mia_evals/secmia.py).

With t_sec = 100 and stride k = 10:
1. deterministic DDIM inversion of the clean image from t=0 to t_sec - k = 90 (9 queries: 0->10->...->90);
2. one deterministic step up from t_sec - k to t_sec (1 query) and one back down to t_sec - k (1 query);
3. S = -||x_{t_sec-k} - x'_{t_sec-k}||^2, the round-trip error at t_sec - k: members come back more faithfully.
Queries: t_sec/k + 1 (11 with the defaults; the paper counts "10 + 2"). No randomness: scores do not depend on the seed.
"""

from __future__ import annotations

import torch
from pydantic import Field

from diffmia.core.config import ConfigError

from .base import Attack, AttackBatch, AttackParams, ddim_move, register_attack


class SecMIParams(AttackParams):
    timestep: int = Field(100, ge=2, le=999, description="t_sec, the top of the round trip")
    stride: int = Field(10, ge=1, le=500, description="DDIM stride k of the inversion and of the round trip")


@register_attack
class SecMI(Attack):
    name = "secmi"
    access = "gray-box"
    paper = "Duan et al., SecMI (stat), arXiv 2302.01316"
    Params = SecMIParams

    def check(self, params: SecMIParams) -> None:
        if params.timestep % params.stride or params.timestep < 2 * params.stride:
            raise ConfigError(
                f"attack secmi: timestep {params.timestep} must be a multiple of stride {params.stride}, "
                "at least twice it"
            )

    def queries_per_sample(self, target) -> int:
        return self.params.timestep // self.params.stride + 1

    def score(self, target, batch: AttackBatch) -> torch.Tensor:
        t_sec, k = self.params.timestep, self.params.stride
        x = target.encode(batch.images)
        for t in range(0, t_sec - k, k):  # inversion 0 -> k -> ... -> t_sec - k
            eps = target.predict_noise(x, t, batch.captions)
            x = ddim_move(x, eps, target.alpha_bar(t), target.alpha_bar(t + k))
        eps = target.predict_noise(x, t_sec - k, batch.captions)
        x_up = ddim_move(x, eps, target.alpha_bar(t_sec - k), target.alpha_bar(t_sec))
        eps = target.predict_noise(x_up, t_sec, batch.captions)
        x_back = ddim_move(x_up, eps, target.alpha_bar(t_sec), target.alpha_bar(t_sec - k))
        return -((x - x_back) ** 2).flatten(1).sum(1)
