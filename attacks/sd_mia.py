"""SD-MIA (arXiv 2605.27020, CVPR 2026): black-box membership inference by cross-modal text perturbation.

For each image x with caption c, three perturbed prompts are made (token, style and semantic views, perturb.py); the
image itself is not perturbed. For the original caption and each view, N images x' are generated through the
target's generate() only (DDIM, `steps`, classifier-free guidance). The similarity of x to a generation is the cosine
of image features (the digits-classifier features trained on the public split by default, or CLIP from a local
folder), concatenated with text features of the two images' captions d_x, d_x' when a local CLIP text model is given
(`text_features_path`). The paper captions both images with BLIP-2: give `captioner_path` (a local image-to-text
folder, captioner.py) to do the same; without one, d_x is x's own caption and d_x' the prompt x' was generated from.
Per prompt, the top-K% of the N similarities are averaged: s(x, c').

Final score, two variants:
- `difference` (the paper): mean over views of s(x, c'_v) - s(x, c);
- `weighted` (the official code): each view's difference min-max normalised and combined w1*d1 + w2*d2 + d3, the
  normalisation and the weights fitted on the calibration split only (grid search for the best AUC).
Queries per image: (1 + views) * N * steps denoiser calls (twice with guidance).
"""
from __future__ import annotations

from typing import Literal, Optional

import numpy as np
import pandas as pd
import torch
from pydantic import Field

from diffmia.config import ConfigError

from .base import Attack, AttackBatch, AttackParams, register_attack
from .perturb import FLOORS, LLMPerturber, RulePerturber, top_percent_mean

VIEWS = ("token", "style", "semantic")


class SDMIAParams(AttackParams):
    generations: int = Field(10, ge=1, le=100, description="N images per prompt")
    steps: int = Field(20, ge=1, le=200, description="DDIM steps per generation")
    guidance_scale: float = Field(3.0, ge=1.0, le=30.0)
    top_percent: float = Field(50.0, gt=0.0, le=100.0, description="K: mean of the top K% similarities")
    views: list[Literal["token", "style", "semantic"]] = Field(default_factory=lambda: list(VIEWS), min_length=1)
    score_mode: Literal["difference", "weighted"] = "difference"
    perturber: Literal["rules", "llm"] = "rules"
    llm_base_url: Optional[str] = None
    llm_model: str = "gpt-4o-mini"
    llm_api_key_env: Optional[str] = Field(None, description="environment variable holding the API key")
    image_features: Literal["digits-classifier", "clip"] = "digits-classifier"
    image_features_path: Optional[str] = None
    text_features_path: Optional[str] = Field(None, description="local CLIP folder for the text half of the embedding")
    captioner_path: Optional[str] = Field(None, description="local image-to-text folder (BLIP, BLIP-2) captioning x and x'")
    captioner_max_tokens: int = Field(20, ge=1, le=100)
    floor_token: float = Field(FLOORS["token"], ge=0.0, le=1.0)
    floor_style: float = Field(FLOORS["style"], ge=0.0, le=1.0)
    floor_semantic: float = Field(FLOORS["semantic"], ge=0.0, le=1.0)


@register_attack
class SDMIA(Attack):
    name = "sd_mia"
    access = "black-box"
    paper = "SD-MIA: cross-modal text perturbation, arXiv 2605.27020 (CVPR 2026)"
    Params = SDMIAParams
    needs_captions = True

    def check(self, p: SDMIAParams) -> None:
        if p.perturber == "llm" and not p.llm_base_url:
            raise ConfigError("attack sd_mia: perturber=llm needs llm_base_url (an OpenAI-compatible endpoint)")
        if p.image_features == "clip" and not p.image_features_path:
            raise ConfigError("attack sd_mia: image_features=clip needs image_features_path (a local CLIP folder)")
        if p.captioner_path and not p.text_features_path:
            raise ConfigError("attack sd_mia: captioner_path needs text_features_path: the captions enter the similarity "
                              "only through the text half of the embedding")
        floors = {"token": p.floor_token, "style": p.floor_style, "semantic": p.floor_semantic}
        self.perturber = (LLMPerturber(p.llm_base_url, p.llm_model, p.llm_api_key_env, seed=self.seed, floors=floors)
                          if p.perturber == "llm" else RulePerturber(self.seed, floors))
        self.components = ("s_original",) + tuple(f"s_{v}" for v in p.views)
        self.image_net = None
        self.text_net = None
        self.captioner = None
        self.caption_examples: list[tuple[str, str]] = []

    def queries_per_sample(self, target) -> int:
        p = self.params
        return (1 + len(p.views)) * p.generations * p.steps * (2 if p.guidance_scale != 1.0 else 1)

    def generations_per_sample(self, target) -> int:
        return (1 + len(self.params.views)) * self.params.generations

    def prepare(self, loaded, cache_dir) -> None:
        """The attacker's auxiliary data: the public split (feature network) and local feature models."""
        from diffmia.evaluate.features import TransformersImageFeatures, public_digits_classifier

        p = self.params
        if p.image_features == "clip":
            self.image_net = TransformersImageFeatures(p.image_features_path, "clip")
        else:
            self.image_net, _ = public_digits_classifier(loaded.images, loaded.manifest, loaded.config.data.resolution,
                                                         self.seed, cache_dir=cache_dir)
        if p.text_features_path:
            self.text_net = TextFeatures(p.text_features_path)
        if p.captioner_path:
            from .captioner import ImageCaptioner

            self.captioner = ImageCaptioner(p.captioner_path, p.captioner_max_tokens)

    @torch.no_grad()
    def embed(self, images: torch.Tensor, captions) -> torch.Tensor:
        """h_v(x) (+) h_t(d_x); d_x from the captioner when one is given, else `captions`."""
        if self.image_net is None:
            raise RuntimeError("sd_mia: prepare() was not called (the runner does this)")
        parts = [torch.nn.functional.normalize(self.image_net(images).float(), dim=-1)]
        if self.text_net is not None:
            if self.captioner is not None:
                described = self.captioner(images)
                if len(self.caption_examples) < 5:
                    self.caption_examples += list(zip(captions, described))[: 5 - len(self.caption_examples)]
                captions = described
            parts.append(torch.nn.functional.normalize(self.text_net(list(captions)), dim=-1))
        return torch.cat(parts, dim=-1) / len(parts) ** 0.5

    def prompts(self, batch: AttackBatch) -> dict[str, list[str]]:
        captions = list(batch.captions or [""] * len(batch.ids))
        out = {"original": captions}
        for view in self.params.views:
            out[view] = [self.perturber.perturb(c, view, key=int(i)) for c, i in zip(captions, batch.ids)]
        return out

    def score(self, target, batch: AttackBatch) -> dict[str, torch.Tensor]:
        p = self.params
        anchor = self.embed(batch.images, batch.captions or [""] * len(batch.ids))
        out = {}
        for v, (view, prompts) in enumerate(self.prompts(batch).items()):
            sims = []
            for j in range(p.generations):
                noise = self.noise(batch, target.sample_shape, draw=v * p.generations + j)
                gen = target.generate(len(batch.ids), prompts, steps=p.steps, guidance_scale=p.guidance_scale,
                                      initial_noise=noise)
                sims.append((anchor * self.embed(gen, prompts)).sum(-1))
            out[f"s_{view}"] = torch.as_tensor(top_percent_mean(torch.stack(sims, 1).numpy(), p.top_percent))
        return out

    def combine(self, frame: pd.DataFrame) -> np.ndarray:
        diffs = {v: (frame[f"s_{v}"] - frame["s_original"]).to_numpy() for v in self.params.views}
        if self.params.score_mode == "difference":
            return np.mean(list(diffs.values()), axis=0)
        cal = (frame.split == "calibration").to_numpy()
        labels = frame.is_member.to_numpy()[cal]
        normed = []
        for v in self.params.views:
            lo, hi = diffs[v][cal].min(), diffs[v][cal].max()
            normed.append((diffs[v] - lo) / (hi - lo if hi > lo else 1.0))
        if len(normed) != 3:  # the official grid weighs the token and style views against the semantic one
            self.fitted = {"weights": [1.0] * len(normed)}
            return sum(normed)
        from sklearn.metrics import roc_auc_score

        grid = np.linspace(0.0, 2.0, 11)
        best, best_auc = (1.0, 1.0), -1.0
        for w1 in grid:
            for w2 in grid:
                s = w1 * normed[0] + w2 * normed[1] + normed[2]
                a = roc_auc_score(labels, s[cal]) if 0 < labels.sum() < len(labels) else 0.5
                if a > best_auc:
                    best, best_auc = (float(w1), float(w2)), float(a)
        self.fitted = {"weights": [best[0], best[1], 1.0], "calibration_auc": best_auc}
        return best[0] * normed[0] + best[1] * normed[1] + normed[2]

    def extra_info(self) -> dict:
        info = {"perturbations": dict(self.perturber.stats)}
        if hasattr(self, "fitted"):
            info["fitted"] = self.fitted
        if self.text_net is not None:
            info["d_x"] = "captioner" if self.captioner is not None else "own caption / generation prompt"
        if self.caption_examples:
            info["caption_examples"] = [{"prompt_or_caption": a, "captioner": b} for a, b in self.caption_examples]
        return info


class TextFeatures(torch.nn.Module):
    """CLIP text embeddings (text_embeds) from a local transformers folder with its tokenizer."""

    def __init__(self, path: str):
        super().__init__()
        from pathlib import Path

        from transformers import AutoTokenizer, CLIPTextModelWithProjection

        if not (Path(path) / "config.json").is_file():
            raise ConfigError(f"attack sd_mia: text_features_path {path}: no transformers model folder (config.json missing)")
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = CLIPTextModelWithProjection.from_pretrained(path, use_safetensors=True).eval()

    @torch.no_grad()
    def forward(self, texts: list[str]) -> torch.Tensor:
        ids = self.tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
        return self.model(**ids).text_embeds.float()
