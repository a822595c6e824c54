"""Text-side defenses for text-conditioned targets (Somepalli et al., "Understanding and Mitigating Copying in
Diffusion Models", arXiv 2305.20086): both weaken the tie between a training image and its exact caption.

- `caption_randomisation`: each step, with probability p a row's caption is replaced by the caption of a random other
  training row (mode `replace`), or each of its words by a random word from the training captions (mode `tokens`);
- `text_embedding_noise`: Gaussian noise of std `std` added to the text features the UNet cross-attends to
  (their rand_noise_lam).
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from .base import Defense, DefenseParams, register_defense


class CaptionRandomisationParams(DefenseParams):
    probability: float = Field(0.3, gt=0.0, le=1.0)
    mode: Literal["replace", "tokens"] = "replace"


def _content(ids: torch.Tensor, pad_ids: torch.Tensor) -> torch.Tensor:
    """Positions that hold words (not padding, start or end markers)."""
    mask = torch.ones_like(ids, dtype=torch.bool)
    for special in pad_ids:
        mask &= ids != special
    return mask


@register_defense
class CaptionRandomisation(Defense):
    name = "caption_randomisation"
    paper = "Somepalli et al., Understanding and Mitigating Copying in Diffusion Models, arXiv 2305.20086"
    Params = CaptionRandomisationParams
    stage = "step"
    text_only = True

    @property
    def token_level(self) -> bool:
        return self.params.mode == "tokens"

    def perturb_captions(self, ids, pool, gen):
        p = self.params
        ids = ids.clone()
        specials = torch.unique(torch.cat([pool[:, 0], pool[:, -1], torch.tensor([0, 1, 2, 3])]))
        if p.mode == "replace":
            chosen = torch.rand(len(ids), generator=gen) < p.probability
            ids[chosen] = pool[torch.randint(0, len(pool), (int(chosen.sum()),), generator=gen)]
            return ids
        words = pool[_content(pool, specials)]
        mask = _content(ids, specials) & (torch.rand(ids.shape, generator=gen) < p.probability)
        ids[mask] = words[torch.randint(0, len(words), (int(mask.sum()),), generator=gen)]
        return ids


class TextEmbeddingNoiseParams(DefenseParams):
    std: float = Field(0.1, gt=0.0, le=10.0)


@register_defense
class TextEmbeddingNoise(Defense):
    name = "text_embedding_noise"
    paper = "Somepalli et al., arXiv 2305.20086 (rand_noise_lam)"
    Params = TextEmbeddingNoiseParams
    stage = "step"
    text_only = True

    def text_noise(self, shape, gen, current):
        noise = self.params.std * torch.randn(shape, generator=gen)
        return noise if current is None else current + noise
