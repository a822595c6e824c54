"""CLiD: conditional likelihood discrepancy (Zhai et al., arXiv 2405.14800), gray-box, text-conditioned targets.

For timesteps t in {440, 450, 460} and one seeded noise draw each:
  D = E_t[ ||eps_theta(x_t, t, c*) - eps||^2 - ||eps_theta(x_t, t, c) - eps||^2 ], averaged over reduced captions c*,
  L = -E_t ||eps_theta(x_t, t, c) - eps||^2.
Reduced captions replace the caption's important words by padding at rates 0.3 / 0.5 / 0.7, plus the null caption.
"Important" is our choice (the paper leaves the ranking to its code): content words, longest first, stop words last.
The two components are robust-scaled (scikit-learn RobustScaler, fitted on the calibration split only) and summed:
S = scaled(D) + loss_weight * scaled(L). Queries: len(timesteps) * (1 + len(rates) + 1) = 15 by default.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch
from pydantic import Field

from .base import Attack, AttackBatch, AttackParams, add_noise, register_attack

STOP_WORDS = {"a", "an", "the", "of", "in", "on", "with", "and", "at", "to", "photo", "picture", "image"}


class CLiDParams(AttackParams):
    timesteps: list[int] = Field(default_factory=lambda: [440, 450, 460], min_length=1)
    rates: list[float] = Field(default_factory=lambda: [0.3, 0.5, 0.7])
    null_caption: bool = True
    loss_weight: float = Field(1.0, ge=0.0)


def reduce_caption(caption: str, rate: float) -> str:
    """Drop (replace by padding) the ceil(rate * n) most important words of the caption."""
    words = caption.split()
    if not words:
        return caption
    ranked = sorted(range(len(words)), key=lambda i: (words[i].lower() in STOP_WORDS, -len(words[i]), i))
    drop = set(ranked[: math.ceil(rate * len(words))])
    return " ".join(w for i, w in enumerate(words) if i not in drop)


@register_attack
class CLiD(Attack):
    name = "clid"
    access = "gray-box"
    paper = "Zhai et al., CLiD, arXiv 2405.14800"
    Params = CLiDParams
    needs_captions = True
    components = ("discrepancy", "loss")

    def queries_per_sample(self, target) -> int:
        p = self.params
        return len(p.timesteps) * (1 + len(p.rates) + int(p.null_caption))

    def reduced(self, captions):
        out = [[reduce_caption(c, r) for c in captions] for r in self.params.rates]
        if self.params.null_caption:
            out.append([""] * len(captions))
        return out

    def score(self, target, batch: AttackBatch) -> dict[str, torch.Tensor]:
        captions = list(batch.captions or [""] * len(batch.ids))
        z = target.encode(batch.images)
        reduced = self.reduced(captions)
        disc = torch.zeros(len(captions))
        loss = torch.zeros(len(captions))
        for i, t in enumerate(self.params.timesteps):
            eps = self.noise(batch, z.shape[1:], draw=i)
            x_t = add_noise(target, z, eps, t)
            full = ((target.predict_noise(x_t, t, captions) - eps) ** 2).flatten(1).mean(1)
            loss -= full
            for caps in reduced:
                disc += ((target.predict_noise(x_t, t, caps) - eps) ** 2).flatten(1).mean(1) - full
        n = len(self.params.timesteps)
        return {"discrepancy": disc / (n * len(reduced)), "loss": loss / n}

    def combine(self, frame: pd.DataFrame) -> np.ndarray:
        from sklearn.preprocessing import RobustScaler

        cal = frame.split == "calibration"
        parts = []
        for name in self.components:
            scaler = RobustScaler().fit(frame.loc[cal, [name]].to_numpy())
            parts.append(scaler.transform(frame[[name]].to_numpy())[:, 0])
        return parts[0] + self.params.loss_weight * parts[1]
