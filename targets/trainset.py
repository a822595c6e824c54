"""The rows a target trains on: the members (or the public split, for a public base model), plus injected duplicates
when the data config asks for them (a fraction of members repeated r times, optionally with pixel noise), as
web-scraped data has. Each row remembers the dataset index it came from (`origins`).

Canaries (the one-run audit's) train the way members do, in every recipe: a model trained on the members gets every
canary whose coin came up heads; a dual-model teacher trained on one half of the members gets the IN canaries of the
same half (a seeded cut of its own); a model trained on the public split (a public base) or a reference subset gets
none. What a defense then removes (deduplication) is recorded by the training loop (`canaries_trained`)."""

from __future__ import annotations

import numpy as np
import torch

from diffmia.core.config import TargetConfig

from .data import ImageSet
from .manifest import SplitManifest


def build_training_set(
    images: ImageSet, manifest: SplitManifest, cfg: TargetConfig, resolution: int, train_on: str, seed_fn
) -> tuple[torch.Tensor, np.ndarray, dict]:
    idx = (
        member_half(manifest, cfg.seed, int(train_on[-1]), seed_fn)
        if train_on.startswith("members-half-")
        else manifest.indices(train_on)
    )
    x = images.tensor(idx, resolution)
    origins = np.asarray(idx, dtype=np.int64)
    info: dict = {"trained_on": train_on, "rows": len(idx)}
    d = cfg.data.duplicates
    count = int(round(d.fraction * len(idx)))
    if train_on.startswith("members") and count and d.copies:
        rng = np.random.default_rng(seed_fn(cfg.seed, 7))
        chosen = np.sort(rng.choice(len(idx), size=count, replace=False))
        copies = x[torch.as_tensor(chosen)].repeat_interleave(d.copies, dim=0)
        if d.augment_std:
            gen = torch.Generator().manual_seed(seed_fn(cfg.seed, 8))
            copies = (copies + d.augment_std * torch.randn(copies.shape, generator=gen)).clamp(-1, 1)
        x = torch.cat([x, copies])
        origins = np.concatenate([origins, np.repeat(origins[chosen], d.copies)])
        info.update(
            {
                "rows": len(x),
                "duplicated_members": sorted(int(i) for i in origins[chosen]),
                "copies": d.copies,
                "augment_std": d.augment_std,
            }
        )
    canaries = canaries_for(manifest, cfg.seed, train_on, seed_fn)
    if canaries:  # canaries whose coin came up heads train like members (after them: members' rows keep their order)
        x = torch.cat([x, images.tensor(canaries, resolution)])
        origins = np.concatenate([origins, np.asarray(canaries, dtype=np.int64)])
        info.update({"rows": len(x), "canaries_included": len(canaries), "canaries_planned": canaries})
    return x, origins, info


def canaries_for(manifest: SplitManifest, seed: int, train_on: str, seed_fn) -> list[int]:
    """The IN canaries a model trained on `train_on` must see: all of them for the members, their half for a
    dual-model teacher on half of the members, none for any other training set."""
    if train_on == "members":
        return [c["index"] for c in manifest.canaries() if c["included"]]
    if train_on.startswith("members-half-"):
        return canary_half(manifest, seed, int(train_on[-1]), seed_fn)
    return []


def canary_half(manifest: SplitManifest, seed: int, half: int, seed_fn) -> list[int]:
    """Half 0 or 1 of the IN canaries, cut like the members (its own seeded permutation)."""
    included = [c["index"] for c in manifest.canaries() if c["included"]]
    order = np.random.default_rng(seed_fn(seed, 12)).permutation(len(included))
    cut = len(included) // 2
    chosen = order[:cut] if half == 0 else order[cut:]
    return sorted(included[i] for i in chosen)


def member_half(manifest: SplitManifest, seed: int, half: int, seed_fn) -> list[int]:
    """Half 0 or 1 of the members, cut by a seeded permutation (dual-model defenses train one model on each)."""
    members = manifest.indices("members")
    order = np.random.default_rng(seed_fn(seed, 11)).permutation(len(members))
    cut = len(members) // 2
    chosen = order[:cut] if half == 0 else order[cut:]
    return sorted(members[i] for i in chosen)
