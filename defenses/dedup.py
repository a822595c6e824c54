"""Deduplication of the training set before training (Carlini et al., "Extracting Training Data from Diffusion
Models", arXiv 2301.13188: duplicated images leak and are copied far more).

- exact: rows with identical pixels (content hash) are kept once;
- near: rows whose embeddings have cosine similarity above `threshold` with an earlier kept row are dropped
  (Somepalli et al. use > 0.5 on SSCD features; here the embedding is the mean-centred pixels by default, the
  digits-classifier features, or CLIP / DINOv2 from a local folder).
What was removed (how many rows, which member ids, the groups) goes into the manifest and the report.
"""

from __future__ import annotations

import hashlib
from typing import Literal, Optional

import numpy as np
import torch
from pydantic import Field

from .base import Defense, DefenseParams, register_defense


class DedupParams(DefenseParams):
    mode: Literal["exact", "near"] = "near"
    threshold: float = Field(0.95, gt=0.0, le=1.0, description="cosine similarity above which rows are duplicates")
    embedding: Literal["pixels", "digits-classifier", "clip", "dinov2"] = "pixels"
    embedding_path: Optional[str] = Field(None, description="local transformers folder for clip / dinov2")


def exact_keep(x: torch.Tensor) -> np.ndarray:
    seen: set[str] = set()
    keep = []
    for i, row in enumerate(x):
        h = hashlib.sha256(row.numpy().tobytes()).hexdigest()
        if h not in seen:
            seen.add(h)
            keep.append(i)
    return np.array(keep, dtype=np.int64)


def near_keep(emb: torch.Tensor, threshold: float) -> np.ndarray:
    """Greedy: walk rows in order; a row is dropped if it is too similar to any row kept before it."""
    e = torch.nn.functional.normalize(emb.double().flatten(1), dim=1)
    sim = e @ e.T
    kept: list[int] = []
    for i in range(len(e)):
        if not kept or sim[i, kept].max() <= threshold:
            kept.append(i)
    return np.array(kept, dtype=np.int64)


@register_defense
class Deduplication(Defense):
    name = "dedup"
    paper = "Carlini et al., Extracting Training Data from Diffusion Models, arXiv 2301.13188"
    Params = DedupParams
    stage = "data"

    def embed(self, x: torch.Tensor, ctx) -> torch.Tensor:
        p = self.params
        if p.embedding == "pixels":
            return x.flatten(1) - x.flatten(1).mean(1, keepdim=True)
        from diffmia.evaluate.features import TransformersImageFeatures, public_digits_classifier

        if p.embedding == "digits-classifier":
            net, _ = public_digits_classifier(
                ctx.images, ctx.manifest, ctx.config.data.resolution, ctx.config.seed, cache_dir=ctx.cache_dir
            )
        else:
            net = TransformersImageFeatures(p.embedding_path or "", p.embedding)
        with torch.no_grad():
            return torch.cat([net(x[i : i + 256]) for i in range(0, len(x), 256)])

    def training_set(self, x, origins, ctx):
        keep = exact_keep(x) if self.params.mode == "exact" else near_keep(self.embed(x, ctx), self.params.threshold)
        dropped = np.setdiff1d(np.arange(len(x)), keep)
        ctx.report["dedup"] = {
            "rows_before": int(len(x)),
            "rows_after": int(len(keep)),
            "removed": int(len(dropped)),
            "removed_member_ids": sorted({int(origins[i]) for i in dropped}),
            "members_lost_entirely": sorted(set(int(o) for o in origins) - set(int(origins[i]) for i in keep)),
        }
        return x[torch.as_tensor(keep)], origins[keep]
