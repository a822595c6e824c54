"""SD-MIA (arXiv 2605.27020, CVPR 2026): black-box membership inference by cross-modal text perturbation, as the
official code computes it (wanghl21/SD-MIA: scripts/pipeline.sh, src/cal_embedding.py, src/cal_relevance.py,
process.ipynb).

For each image x with caption c, three perturbed prompts are made (token, style and semantic views, perturb.py); the
image itself is not perturbed. For each view, N images x' are generated through the target's generate() only (DDIM,
`steps`, classifier-free guidance). The similarity of x to a generation is the dot product of two embeddings, each the
L2-normalised image features (the digits classifier trained on the public split, or CLIP from a local folder) joined
with the L2-normalised CLIP text embedding of the image's caption from a captioner (`captioner_path`, BLIP/BLIP-2 as in
the paper: d_x for x, d_x' for each generation) and renormalised. Without a captioner the similarity is the image
features' cosine alone. Per view the top-K% of the N similarities are averaged (floor(N*K/100), at least one; the
official K = 10% of N = 10 keeps the best one): d_v.

Final score (`score_mode`):
- `official` (default, the official code): each view's d_v min-max normalised, score = w1*d_token + w2*d_style +
  d_semantic, the normalisation and w1, w2 (a 20 x 20 grid on [0, 1], best AUC, later grid points winning ties as in
  the notebook) fitted on the calibration split only. Needs all three views.
- `mean`: the mean of the raw d_v over views; nothing is fitted, no labels used.
- `paper`: the paper's equation, mean over views of d_v - s(x, c), where s(x, c) pools N generations from the ORIGINAL
  caption (generated in this mode only). It rests on the paper's pre-training premise that s(x, c) itself does not
  separate members; on a target fine-tuned on its members it does, and the subtraction can invert the signal.
Queries per image: prompts * N * steps denoiser calls (twice with guidance), prompts = 3 (4 in `paper` mode).
Guidance: the official 7.5 is the Stable Diffusion targets' default; the small digits text targets default to 1.0,
where their samples are best (benchmarks/guidance_fid.py: FID 33 at 1, 212 at 3).
An image whose rewrite the LLM perturber cannot produce is dropped from the attack; its id is in the score file's JSON.
"""

from __future__ import annotations

from typing import Literal, Optional

import numpy as np
import pandas as pd
import torch
from pydantic import Field

from diffmia.core.config import ConfigError

from .base import Attack, AttackBatch, AttackParams, register_attack
from .perturb import FLOORS, LLMPerturber, RulePerturber, TextSimilarity, top_percent_mean

VIEWS = ("token", "style", "semantic")


class SDMIAParams(AttackParams):
    generations: int = Field(10, ge=1, le=100, description="N images per prompt (official: 10)")
    steps: int = Field(40, ge=1, le=200, description="DDIM steps per generation (official: 40)")
    guidance_scale: Optional[float] = Field(
        None,
        ge=1.0,
        le=30.0,
        description="None: the target's default (7.5 for Stable Diffusion, 1.0 for the digits text targets)",
    )
    top_percent: float = Field(10.0, gt=0.0, le=100.0, description="K: mean of the top K% similarities (official: 10)")
    views: list[Literal["token", "style", "semantic"]] = Field(default_factory=lambda: list(VIEWS), min_length=1)
    score_mode: Literal["official", "mean", "paper"] = "official"
    perturber: Literal["rules", "llm"] = "rules"
    llm_base_url: Optional[str] = None
    llm_model: str = "gpt-4o-mini"
    llm_api_key_env: Optional[str] = Field(None, description="environment variable holding the API key")
    llm_timeout: float = Field(30.0, gt=0.0, le=600.0, description="seconds one LLM request may take in all")
    llm_backoff: float = Field(1.0, ge=0.0, le=60.0, description="seconds before the 2nd attempt (doubled for the 3rd)")
    image_features: Literal["digits-classifier", "clip"] = "digits-classifier"
    image_features_path: Optional[str] = None
    text_features_path: Optional[str] = Field(
        None, description="local CLIP folder: captions' text half and the rewrite floors"
    )
    captioner_path: Optional[str] = Field(
        None, description="local image-to-text folder (BLIP, BLIP-2) captioning x and x'"
    )
    captioner_max_tokens: int = Field(20, ge=1, le=100)
    floor_token: float = Field(FLOORS["token"], ge=0.0, le=1.0)
    floor_style: float = Field(FLOORS["style"], ge=0.0, le=1.0)
    floor_semantic: float = Field(FLOORS["semantic"], ge=0.0, le=1.0)


def fit_official(frame: pd.DataFrame, calibration: np.ndarray) -> tuple[np.ndarray, dict]:
    """The official combination: per-view min-max (fit on calibration), w1*d1 + w2*d2 + d3, w1, w2 by a 20 x 20 grid
    on [0, 1] maximising the calibration AUC (ties: the later grid point, as the notebook's `auc == max(...)`)."""
    from sklearn.metrics import roc_auc_score

    normed = {}
    for v in VIEWS:
        x = frame[f"s_{v}"].to_numpy(dtype=np.float64)
        lo, hi = x[calibration].min(), x[calibration].max()
        normed[v] = (x - lo) / (hi - lo if hi > lo else 1.0)
    labels = frame.is_member.to_numpy()[calibration]
    grid = np.linspace(0.0, 1.0, 20)
    best, best_auc = (1.0, 1.0), -1.0
    for w1 in grid:
        for w2 in grid:
            s = w1 * normed["token"] + w2 * normed["style"] + normed["semantic"]
            auc = roc_auc_score(labels, s[calibration]) if 0 < labels.sum() < len(labels) else 0.5
            if auc >= best_auc:
                best, best_auc = (float(w1), float(w2)), float(auc)
    score = best[0] * normed["token"] + best[1] * normed["style"] + normed["semantic"]
    return score, {"weights": {"token": best[0], "style": best[1], "semantic": 1.0}, "calibration_auc": best_auc}


@register_attack
class SDMIA(Attack):
    name = "sd_mia"
    needs_public = (
        "its default image features are a classifier trained on public images: give --public FOLDER (or run "
        "`diffmia attack` with image_features=clip and a local CLIP)"
    )
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
            raise ConfigError(
                "attack sd_mia: captioner_path needs text_features_path: the captions enter the similarity "
                "only through the text half of the embedding"
            )
        if p.score_mode == "official" and sorted(p.views) != sorted(VIEWS):
            raise ConfigError(
                f"attack sd_mia: score_mode official weighs all three views {list(VIEWS)}; "
                f"views={p.views} needs score_mode mean or paper"
            )
        if len(set(p.views)) != len(p.views):
            raise ConfigError(f"attack sd_mia: views repeat: {p.views}")
        floors = {"token": p.floor_token, "style": p.floor_style, "semantic": p.floor_semantic}
        self.perturber = (
            LLMPerturber(
                p.llm_base_url,
                p.llm_model,
                p.llm_api_key_env,
                timeout=p.llm_timeout,
                seed=self.seed,
                floors=floors,
                backoff=p.llm_backoff,
            )
            if p.perturber == "llm"
            else RulePerturber(self.seed, floors)
        )
        self.prompt_views = (("original",) if p.score_mode == "paper" else ()) + tuple(p.views)
        self.components = tuple(f"s_{v}" for v in self.prompt_views)
        self.image_net = None
        self.text_net = None
        self.captioner = None
        self.caption_examples: list[tuple[str, str]] = []
        self.captioned = 0
        self.dropped: list[int] = []

    def guidance(self, target) -> float:
        g = self.params.guidance_scale
        return float(g if g is not None else getattr(target, "default_guidance_scale", 1.0))

    def queries_per_sample(self, target) -> int:
        p = self.params
        return len(self.prompt_views) * p.generations * p.steps * target.queries_per_step(self.guidance(target))

    def generations_per_sample(self, target) -> int:
        return len(self.prompt_views) * self.params.generations

    def prepare(self, loaded, cache_dir) -> None:
        """The attacker's auxiliary data: the public split (feature network), local feature models, the target's
        vocabulary (rewrites use only words it knows) and the text similarity the floors are measured in."""
        from diffmia.evaluate.features import TransformersImageFeatures, public_digits_classifier

        p = self.params
        if p.image_features == "clip":
            self.image_net = TransformersImageFeatures(p.image_features_path, "clip")
        else:
            self.image_net, _ = public_digits_classifier(
                loaded.images, loaded.manifest, loaded.config.data.resolution, self.seed, cache_dir=cache_dir
            )
        if p.text_features_path:
            self.text_net = TextFeatures(p.text_features_path)
            self.perturber.similarity = TextSimilarity(
                lambda texts: self.text_net(texts).numpy(), label=f"CLIP text embedding cosine ({p.text_features_path})"
            )
        if p.captioner_path:
            from .captioner import ImageCaptioner

            self.captioner = ImageCaptioner(p.captioner_path, p.captioner_max_tokens)
        vocabulary = getattr(loaded.target, "vocabulary", lambda: None)()
        self.perturber.vocabulary = vocabulary

    @torch.no_grad()
    def embed(self, images: torch.Tensor, prompts=None) -> torch.Tensor:
        """h_v(x) (+) h_t(d_x) with d_x from the captioner; image features alone without one."""
        if self.image_net is None:
            raise RuntimeError("sd_mia: prepare() was not called (the runner does this)")
        parts = [torch.nn.functional.normalize(self.image_net(images).float(), dim=-1)]
        if self.captioner is not None:
            described = self.captioner(images)
            self.captioned += len(described)
            if prompts is not None and len(self.caption_examples) < 5:  # in memory only: never written out
                self.caption_examples += list(zip(prompts, described))[: 5 - len(self.caption_examples)]
            parts.append(torch.nn.functional.normalize(self.text_net(list(described)), dim=-1))
        return torch.nn.functional.normalize(torch.cat(parts, dim=-1), dim=-1)

    def prompts(self, batch: AttackBatch) -> dict[str, list[Optional[str]]]:
        captions = list(batch.captions or [""] * len(batch.ids))
        out = {}
        for view in self.prompt_views:
            out[view] = (
                captions
                if view == "original"
                else [self.perturber.perturb(c, view, key=int(i)) for c, i in zip(captions, batch.ids)]
            )
        return out

    def score(self, target, batch: AttackBatch) -> dict[str, torch.Tensor]:
        p = self.params
        prompts = self.prompts(batch)
        keep = [r for r in range(len(batch.ids)) if all(prompts[v][r] is not None for v in self.prompt_views)]
        self.dropped += [int(batch.ids[r]) for r in range(len(batch.ids)) if r not in keep]
        out = {f"s_{v}": torch.full((len(batch.ids),), float("nan"), dtype=torch.float64) for v in self.prompt_views}
        if not keep:
            return out
        anchor = self.embed(batch.images[keep].cpu())  # the feature networks run on the CPU, as generations return
        for v, view in enumerate(self.prompt_views):
            view_prompts = [prompts[view][r] for r in keep]
            sims = []
            for j in range(p.generations):
                noise = self.noise(batch, target.sample_shape, draw=v * p.generations + j)[keep]
                gen = target.generate(
                    len(keep), view_prompts, steps=p.steps, guidance_scale=self.guidance(target), initial_noise=noise
                )
                sims.append((anchor * self.embed(gen, view_prompts)).sum(-1))
            out[f"s_{view}"][keep] = torch.as_tensor(
                top_percent_mean(torch.stack(sims, 1).double().numpy(), p.top_percent)
            )
        return out

    def dropped_ids(self) -> list[int]:
        return list(self.dropped)

    def combine(self, frame: pd.DataFrame) -> np.ndarray:
        mode = self.params.score_mode
        if mode == "mean":
            return np.mean([frame[f"s_{v}"].to_numpy() for v in self.params.views], axis=0)
        if mode == "paper":
            return np.mean([(frame[f"s_{v}"] - frame["s_original"]).to_numpy() for v in self.params.views], axis=0)
        score, self.fitted = fit_official(frame, (frame.split == "calibration").to_numpy())
        return score

    def extra_info(self) -> dict:
        info = {
            "perturbations": dict(self.perturber.stats),
            "score_mode": self.params.score_mode,
            "rewrite_similarity": self.perturber.similarity.label,
            "similarity": "image features + captioner text (d_x, d_x')" if self.captioner else "image features only",
        }
        if hasattr(self, "fitted"):
            info["fitted"] = self.fitted
        if self.captioner is not None:  # a count, not the captions: they describe members' images
            info["captioned_images"] = self.captioned
        return info


class TextFeatures(torch.nn.Module):
    """CLIP text embeddings (text_embeds) from a local transformers folder with its tokenizer."""

    def __init__(self, path: str):
        super().__init__()
        from pathlib import Path

        from transformers import AutoTokenizer, CLIPTextModelWithProjection

        if not (Path(path) / "config.json").is_file():
            raise ConfigError(
                f"attack sd_mia: text_features_path {path}: no transformers model folder (config.json missing)"
            )
        self.tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
        self.model = CLIPTextModelWithProjection.from_pretrained(
            path, use_safetensors=True, trust_remote_code=False
        ).eval()

    @torch.no_grad()
    def forward(self, texts: list[str]) -> torch.Tensor:
        ids = self.tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
        return self.model(**ids).text_embeds.float()
