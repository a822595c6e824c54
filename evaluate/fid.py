"""Utility of a target: FID and KID of its samples against real held-out images (torchmetrics; no hand-written
Frechet maths), and the floor a perfect model would reach: the same distance between two disjoint real sets.

Reference = the non-members (never trained on, by the target or by the feature network). Floor = the members against
that same reference: what a model that reproduced its training set would score at this sample size.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Literal, Optional

import torch
from pydantic import Field
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

from diffmia.core.config import StrictModel
from diffmia.targets.images import grid_png
from diffmia.targets.runs import LoadedRun

from .features import (
    FeatureError,
    TransformersImageFeatures,
    inception_fid_metric,
    public_digits_classifier,
    to_unit_interval,
)

# Part of the key of every cached utility file (diffmia run): bump it when sampling, the feature networks or the
# distance computation change, and every recipe's FID is recomputed on the next run instead of read from a stale file.
# 2: KID on scaled features with real subsets; 3: one seeded generator per sampling batch; 4: FID bootstrap interval
UTILITY_VERSION = 4

FEATURE_LABELS = {
    "digits-classifier": "FID (digits-classifier features)",
    "clip": "FID (CLIP image features)",
    "dinov2": "FID (DINOv2 features)",
    "inception": "FID (Inception-v3)",
}


class UtilityConfig(StrictModel):
    enabled: bool = True
    features: Literal["digits-classifier", "clip", "dinov2", "inception"] = "digits-classifier"
    features_path: Optional[str] = Field(None, description="local folder (clip/dinov2) or weights file (inception)")
    samples: int = Field(256, ge=16, le=100000, description="generated images")
    sample_steps: int = Field(50, ge=1, le=1000)
    sampler: Literal["ddim", "ddpm"] = "ddim"
    batch_size: int = Field(256, ge=1)
    seed: int = Field(0, ge=0)
    classifier_epochs: int = Field(30, ge=1, le=500)
    guidance_scale: float = Field(3.0, ge=1.0, le=30.0, description="text targets: prompts are the reference captions")


def feature_network(
    loaded: LoadedRun, cfg: UtilityConfig, cache_dir: str | Path | None
) -> tuple[torch.nn.Module, dict]:
    if cfg.features == "digits-classifier":
        return public_digits_classifier(
            loaded.images, loaded.manifest, loaded.config.data.resolution, cfg.seed, cfg.classifier_epochs, cache_dir
        )
    if cfg.features in ("clip", "dinov2"):
        if not cfg.features_path:
            raise FeatureError(
                f"utility.features={cfg.features} needs utility.features_path (a local transformers folder)"
            )
        return TransformersImageFeatures(cfg.features_path, cfg.features), {
            "features": cfg.features,
            "path": cfg.features_path,
        }
    raise FeatureError(f"unknown features {cfg.features!r}")


class ScaledFeatures(torch.nn.Module):
    def __init__(self, net: torch.nn.Module, scale: float):
        super().__init__()
        self.net, self.scale = net, max(scale, 1e-12)

    def forward(self, x):
        return self.net(x) / self.scale


@torch.no_grad()
def distances(net: torch.nn.Module, real: torch.Tensor, fake: torch.Tensor, batch: int = 256) -> dict[str, float]:
    """FID and KID between two image sets in [-1, 1], features from `net`."""
    # sync_on_compute=False: under a launcher only the main process computes distances, on every sample; torchmetrics'
    # default would wait at compute() for the other processes' (empty) states and hang
    fid = FrechetInceptionDistance(feature=net, normalize=False, sync_on_compute=False)
    # KID's kernel (x.y/d + 1)^3 is not scale-free: Inception features are O(1), a classifier's are not (unscaled,
    # KID read 164 beside an FID of 10). Features are scaled to unit mean square on the real set; subsets of half the
    # smaller set, so that the 100 subsets differ and kid_std means something.
    scale = float(torch.cat([net(real[i : i + batch]) for i in range(0, len(real), batch)]).pow(2).mean().sqrt())
    subset = max(2, min(len(real), len(fake), 2000) // 2)
    with warnings.catch_warnings():  # "KID keeps all features in memory": intended at these sizes
        warnings.simplefilter("ignore", UserWarning)
        kid = KernelInceptionDistance(
            feature=ScaledFeatures(net, scale), subsets=100, subset_size=subset, normalize=False, sync_on_compute=False
        )
    for images, is_real in ((real, True), (fake, False)):
        for i in range(0, len(images), batch):
            fid.update(images[i : i + batch], real=is_real)
            kid.update(images[i : i + batch], real=is_real)
    with torch.random.fork_rng():  # torchmetrics draws KID's subsets from the global generator: seed it
        torch.manual_seed(0)
        kid_mean, kid_std = kid.compute()
    out = {"fid": float(fid.compute()), "kid": float(kid_mean), "kid_std": float(kid_std)}
    out.update(fid_bootstrap(net, real, fake, batch))
    return out


FID_BOOTSTRAP = 200


@torch.no_grad()
def fid_bootstrap(net: torch.nn.Module, real: torch.Tensor, fake: torch.Tensor, batch: int = 256) -> dict:
    """A 95% interval of the FID over the generated samples (resampled with replacement, the real set fixed: the
    interval of this model's sample, for comparing recipes on one reference; percentiles re-centred on the estimate),
    with torchmetrics' Frechet distance. Skipped (empty) for features wider than 1024, where 200 matrix square roots cost minutes."""
    from torchmetrics.image.fid import _compute_fid

    def feats(x):
        return torch.cat([net(x[i : i + batch]) for i in range(0, len(x), batch)]).double()

    fr, ff = feats(real), feats(fake)
    if fr.shape[1] > 1024 or len(ff) < 2:
        return {}
    mu_r, sigma_r = fr.mean(0), torch.cov(fr.T)
    gen = torch.Generator().manual_seed(0)
    draws = []
    for _ in range(FID_BOOTSTRAP):
        sample = ff[torch.randint(len(ff), (len(ff),), generator=gen)]
        draws.append(float(_compute_fid(mu_r, sigma_r, sample.mean(0), torch.cov(sample.T))))
    draws_t = torch.tensor(draws, dtype=torch.float64)
    lo, hi = torch.quantile(draws_t, torch.tensor([0.025, 0.975], dtype=draws_t.dtype)).tolist()
    # a resampled set repeats images, which biases its FID upward: the percentile interval is re-centred on the
    # estimate (its width is what the bootstrap measures)
    estimate = float(_compute_fid(mu_r, sigma_r, ff.mean(0), torch.cov(ff.T)))
    shift = estimate - float(draws_t.mean())
    return {"fid_ci_lo": lo + shift, "fid_ci_hi": hi + shift, "fid_boot_sd": float(draws_t.std())}


@torch.no_grad()
def inception_distances(cfg: UtilityConfig, real: torch.Tensor, fake: torch.Tensor) -> dict[str, float]:
    metric = inception_fid_metric(cfg.features_path)
    for images, is_real in ((real, True), (fake, False)):
        x = to_unit_interval(images)
        if x.shape[1] == 1:
            x = x.repeat(1, 3, 1, 1)
        for i in range(0, len(x), cfg.batch_size):
            metric.update(x[i : i + cfg.batch_size], real=is_real)
    return {"fid": float(metric.compute()), "kid": float("nan"), "kid_std": float("nan")}


def batch_seed(seed: int, batch: int) -> int:
    """The seed of sampling batch `batch`: the configured seed itself for the first (so a run whose samples fit in one
    batch draws what it always drew), a SeedSequence child for the others."""
    if batch == 0:
        return seed
    import numpy as np

    return int(np.random.SeedSequence([seed, 211, batch]).generate_state(1)[0])


def generate_samples(loaded: LoadedRun, cfg: UtilityConfig, progress: bool = False) -> torch.Tensor:
    """cfg.samples images, batch k drawn with its own generator (batch_seed): the same images whether one process
    draws every batch or, under torchrun / accelerate launch, N processes each draw every N-th batch and the batches
    are gathered (every process gets them all)."""
    from diffmia.core.parallel import processes

    world, rank = processes()
    prompts = None
    if loaded.target.conditional:  # prompt with the held-out captions, cycled
        captions = [loaded.images.captions[i] for i in loaded.manifest.indices("nonmembers")]
        prompts = [captions[i % len(captions)] for i in range(cfg.samples)]
    starts = list(range(0, cfg.samples, cfg.batch_size))
    mine: dict[int, torch.Tensor] = {}
    for k, start in enumerate(starts):
        if k % world != rank:
            continue
        count = min(cfg.batch_size, cfg.samples - start)
        gen = torch.Generator().manual_seed(batch_seed(cfg.seed, k))
        mine[k] = loaded.target.generate(
            count,
            prompts[start : start + count] if prompts else None,
            steps=cfg.sample_steps,
            sampler=cfg.sampler,
            generator=gen,
            batch_size=count,
            guidance_scale=cfg.guidance_scale,
            progress=progress and rank == 0,
        ).cpu()
    if world > 1:
        from accelerate.utils import gather_object

        for part in gather_object([mine]):
            mine.update(part)
    return torch.cat([mine[k] for k in range(len(starts))])


def compute_utility(
    loaded: LoadedRun,
    cfg: UtilityConfig,
    cache_dir: str | Path | None = None,
    samples_png: Path | None = None,
    progress: bool = False,
) -> dict:
    """FID/KID of cfg.samples generated images against the non-members, and the members' floor. Under a launcher
    the sampling is sharded (generate_samples); the main process alone computes the distances (and trains or reads
    the cached feature network), then every process returns its result."""
    from diffmia.core.parallel import processes

    t0 = time.time()
    fake = generate_samples(loaded, cfg, progress)
    world, rank = processes()
    result = _distances_of(loaded, cfg, fake, cache_dir, samples_png, t0) if rank == 0 else None
    if world > 1:
        from accelerate.utils import broadcast_object_list

        box = [result]
        broadcast_object_list(box)
        result = box[0]
        result["processes"] = world
    return result


def _distances_of(loaded: LoadedRun, cfg: UtilityConfig, fake: torch.Tensor, cache_dir, samples_png, t0: float) -> dict:
    if samples_png is not None:
        grid_png(fake[:64], samples_png)
    reference = loaded.images.tensor(loaded.manifest.indices("nonmembers"), loaded.resolution)
    members = loaded.images.tensor(loaded.manifest.indices("members"), loaded.resolution)
    if cfg.features == "inception":
        info = {"features": "inception"}
        model_d = inception_distances(cfg, reference, fake)
        floor_d = inception_distances(cfg, reference, members)
    else:
        net, info = feature_network(loaded, cfg, cache_dir)
        model_d = distances(net, reference, fake, cfg.batch_size)
        floor_d = distances(net, reference, members, cfg.batch_size)
    return {
        "fid": model_d["fid"],
        **{k: model_d[k] for k in ("fid_ci_lo", "fid_ci_hi", "fid_boot_sd") if k in model_d},
        "kid": model_d["kid"],
        "kid_std": model_d["kid_std"],
        "fid_floor": floor_d["fid"],
        "kid_floor": floor_d["kid"],
        "fid_label": FEATURE_LABELS[cfg.features],
        "feature_info": info,
        "generated": cfg.samples,
        "reference": len(reference),
        "floor_set": len(members),
        "sample_steps": cfg.sample_steps,
        "sampler": cfg.sampler,
        "seconds": round(time.time() - t0, 2),
    }
