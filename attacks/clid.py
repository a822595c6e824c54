"""CLiD: conditional likelihood discrepancy (Zhai et al., arXiv 2405.14800), gray-box, text-conditioned targets.

For timesteps t in {440, 450, 460} and one seeded noise draw each (shared by every caption of that t):
  D = E_t[ ||eps_theta(x_t, t, c*) - eps||^2 - ||eps_theta(x_t, t, c) - eps||^2 ], averaged over reduced captions c*,
  L = -E_t ||eps_theta(x_t, t, c) - eps||^2.
Reduced captions follow the official code: the ceil(rate * n) most important words are REPLACED IN PLACE by the
tokenizer's pad (end-of-text) token, one pad per token of the word, so every other word keeps its position; rates
0.3 / 0.5 / 0.7, plus the null caption.

Word importance is measured, not guessed: on up to `importance_images` images of the public split (never audited),
each word's importance is the mean increase of the conditional loss when that word alone is padded out, at the same
timesteps. Words never seen on the public split rank last (in caption order). The public queries are the attacker's
preparation and are reported apart from the per-image queries.

Final score: S = alpha * RS(D) + (1 - alpha) * RS(L), RS = scikit-learn's RobustScaler fitted on the calibration split,
alpha grid-searched on the calibration split for the best AUC (the official code tunes it on shadow data) unless
given. Queries per audited image: len(timesteps) * (1 + len(rates) + 1) = 15 by default.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Optional

import numpy as np
import pandas as pd
import torch
from pydantic import Field

from diffmia.core.devices import to_device

from .base import Attack, AttackBatch, AttackParams, add_noise, batch_of, per_sample_noise, register_attack


class CLiDParams(AttackParams):
    timesteps: list[int] = Field(default_factory=lambda: [440, 450, 460], min_length=1)
    rates: list[float] = Field(default_factory=lambda: [0.3, 0.5, 0.7])
    null_caption: bool = True
    alpha: Optional[float] = Field(None, ge=0.0, le=1.0, description="weight of D against L (None: fit on calibration)")
    importance_images: int = Field(
        64, ge=0, le=100000, description="public images that rank the words (0: caption order)"
    )


def pad_words(caption: str, positions: set[int], pad_for) -> str:
    """The caption with the words at `positions` replaced by pad tokens (pad_for(word) gives the replacement)."""
    return " ".join(pad_for(w) if i in positions else w for i, w in enumerate(caption.split()))


def reduce_caption(caption: str, rate: float, importance: dict[str, float], pad_for) -> str:
    """Pad out the ceil(rate * n) most important words of the caption, in place."""
    words = caption.split()
    if not words:
        return caption
    ranked = sorted(range(len(words)), key=lambda i: (-importance.get(words[i].lower(), -math.inf), i))
    return pad_words(caption, set(ranked[: math.ceil(rate * len(words))]), pad_for)


def _loss(target, x_t, t, captions, eps) -> torch.Tensor:
    return ((target.predict_noise(x_t, t, captions) - eps) ** 2).flatten(1).mean(1)


@register_attack
class CLiD(Attack):
    name = "clid"
    without_public = {"importance_images": 0}  # words in caption order instead of ranked on public images
    access = "gray-box"
    paper = "Zhai et al., CLiD, arXiv 2405.14800"
    Params = CLiDParams
    needs_captions = True
    components = ("discrepancy", "loss")

    def check(self, params: CLiDParams) -> None:
        self.importance: dict[str, float] = {}
        self.public_queries = 0

    def queries_per_sample(self, target) -> int:
        p = self.params
        return len(p.timesteps) * (1 + len(p.rates) + int(p.null_caption))

    def prepare(self, loaded, cache_dir) -> None:
        """Rank the vocabulary by each word's effect on the conditional loss over public images."""
        public = loaded.manifest.indices("public")[: self.params.importance_images]
        if not public:
            return
        target = loaded.target
        before = target.queries.sample_queries
        effects: dict[str, list[float]] = defaultdict(list)
        batch = batch_of(loaded, public)
        captions = batch.captions
        z = target.encode(batch.images)
        for k, t in enumerate(self.params.timesteps):
            draws = per_sample_noise(public, z.shape[1:], self.seed + 1_000_003, k)  # not the audit's draws
            eps = to_device(draws, z.device)
            x_t = add_noise(target, z, eps, t)
            full = _loss(target, x_t, t, captions, eps)
            longest = max(len(c.split()) for c in captions)
            for pos in range(longest):
                rows = [r for r, c in enumerate(captions) if pos < len(c.split())]
                padded = [pad_words(captions[r], {pos}, target.pad_text) for r in rows]
                delta = _loss(target, x_t[rows], t, padded, eps[rows]) - full[rows]
                for r, d in zip(rows, delta.tolist()):
                    effects[captions[r].split()[pos].lower()].append(d)
        self.importance = {w: float(np.mean(v)) for w, v in effects.items()}
        self.public_queries = target.queries.sample_queries - before

    def reduced(self, captions, pad_for):
        """The reduced captions per rate (and the null caption); pad_for(word) is the target's in-place padding."""
        out = [[reduce_caption(c, r, self.importance, pad_for) for c in captions] for r in self.params.rates]
        if self.params.null_caption:
            out.append([""] * len(captions))
        return out

    def score(self, target, batch: AttackBatch) -> dict[str, torch.Tensor]:
        captions = list(batch.captions or [""] * len(batch.ids))
        z = target.encode(batch.images)
        reduced = self.reduced(captions, target.pad_text)
        disc = torch.zeros(len(captions), device=z.device)
        loss = torch.zeros(len(captions), device=z.device)
        for i, t in enumerate(self.params.timesteps):
            eps = self.noise(batch, z.shape[1:], draw=i)
            x_t = add_noise(target, z, eps, t)
            full = _loss(target, x_t, t, captions, eps)
            loss -= full
            for caps in reduced:
                disc += _loss(target, x_t, t, caps, eps) - full
        n = len(self.params.timesteps)
        return {"discrepancy": disc / (n * len(reduced)), "loss": loss / n}

    def combine(self, frame: pd.DataFrame) -> np.ndarray:
        from sklearn.metrics import roc_auc_score
        from sklearn.preprocessing import RobustScaler

        cal = (frame.split == "calibration").to_numpy()
        d, l_ = (
            RobustScaler().fit(frame.loc[cal, [c]].to_numpy()).transform(frame[[c]].to_numpy())[:, 0]
            for c in self.components
        )
        alpha = self.params.alpha
        labels = frame.is_member.to_numpy()[cal]
        if alpha is None:
            best = -1.0
            for a in np.linspace(0.0, 1.0, 21):
                s = a * d + (1 - a) * l_
                auc = roc_auc_score(labels, s[cal]) if 0 < labels.sum() < len(labels) else 0.5
                if auc > best:
                    best, alpha = auc, float(a)
            self.fitted = {"alpha": alpha, "calibration_auc": best}
        else:
            self.fitted = {"alpha": alpha}
        return alpha * d + (1 - alpha) * l_

    def extra_info(self) -> dict:
        top = sorted(self.importance.items(), key=lambda kv: -kv[1])
        return {
            "fitted": getattr(self, "fitted", {}),
            "public_queries": self.public_queries,
            "word_importance": {w: round(v, 6) for w, v in top[:20]},
        }
