"""SimA (arXiv 2509.25003): one query on the CLEAN image, S = -sum |eps_theta(x0, t)|^4 at a small timestep.

A member's clean image is a fixed point the model has learnt: its noise prediction at small t is small. The timestep
is chosen on the calibration split (the paper: 10-300; the official scan starts at t = 0, the clean image with no
noise level at all, which the default candidates include): when `timestep` is not given, every candidate is scored on
the calibration halves and the one with the best calibration TPR at 1% FPR is used (attacks/tuning.py); the
calibration queries are reported apart and the test halves are never looked at.
"""

from __future__ import annotations

from typing import Optional

import torch
from pydantic import Field

from diffmia.core.config import ConfigError

from .base import Attack, AttackBatch, AttackParams, register_attack


class SimAParams(AttackParams):
    timestep: Optional[int] = Field(None, ge=0, le=9999, description="t of the query (None: chosen on calibration)")
    candidates: list[int] = Field(default_factory=lambda: [0, 10, 25, 50, 100, 200, 300], min_length=1)
    norm: float = Field(4.0, ge=1.0, le=16.0)


@register_attack
class SimA(Attack):
    name = "sima"
    access = "gray-box"
    paper = "SimA: one query on the clean image, arXiv 2509.25003"
    Params = SimAParams

    def check(self, p: SimAParams) -> None:
        self.timestep = p.timestep
        self.tuned = None

    def queries_per_sample(self, target) -> int:
        return 1

    def prepare(self, loaded, cache_dir) -> None:
        if self.timestep is None:
            from .tuning import tune

            limit = loaded.target.num_train_timesteps
            grid = [t for t in self.params.candidates if t < limit] or [limit // 10]
            chosen, self.tuned = tune(loaded, self.name, {"norm": self.params.norm}, {"timestep": grid}, self.seed)
            self.timestep = chosen["timestep"]

    def score(self, target, batch: AttackBatch) -> torch.Tensor:
        if self.timestep is None:
            raise ConfigError(
                "attack sima: no timestep: give one, or run it through the runner, which chooses it on "
                "the calibration split"
            )
        x0 = target.encode(batch.images)
        eps = target.predict_noise(x0, self.timestep, batch.captions)
        return -(eps.abs() ** self.params.norm).flatten(1).sum(1)

    def extra_info(self) -> dict:
        return {"timestep_used": self.timestep, **({"tuned": self.tuned} if self.tuned else {})}
