"""LiRA: the likelihood-ratio attack with reference models (Carlini et al., arXiv 2112.03570; for diffusion models,
Carlini et al. 2023, arXiv 2301.13188: 16 DDPMs on random halves of CIFAR-10, the loss at t = 100).

Statistic per (model, image): phi = mean over J seeded noise draws of log L_t, L_t = ||eps - eps_theta(x_t, t)||^2 / D,
the same draws for the target and every reference. References come from targets/references.py (the same recipe on
other subsets, cached and shared):
- `mode: online` (every pool image IN exactly N/2 references): per image mu_in, mu_out = the medians of the IN and OUT
  references' phi, and score = log N(phi; mu_in, s_in^2) - log N(phi; mu_out, s_out^2);
- `mode: offline` (references trained on the public split only, all OUT): score = (mu_out - phi) / s_out, the
  one-sided test's statistic (Phi of it is the paper's offline score; the same ranking).
With fewer than 64 references (or `fixed_variance: true`) s_in and s_out are global: the standard deviation of all
IN (OUT) values, as the official code's fix_variance does. Queries per audited image: J on the target; the
references' queries and training time are reported apart.
"""
from __future__ import annotations

import sys
from typing import Literal, Optional

import numpy as np
import torch
from pydantic import Field

from diffmia.config import ConfigError

from .base import Attack, AttackBatch, AttackParams, register_attack
from .statistics import denoising_losses, images_of, log_loss_statistic


class LiRAParams(AttackParams):
    references: int = Field(8, ge=1, le=256, description="N reference models")
    mode: Literal["online", "offline"] = "online"
    timestep: int = Field(100, ge=0, le=9999, description="t of the loss (100 in Carlini et al. 2023)")
    draws: int = Field(4, ge=1, le=64, description="J noise draws averaged, the same for every model")
    fixed_variance: Optional[bool] = Field(None, description="global variances (None: when N < 64)")


class ReferenceAttack(Attack):
    """Shared by the attacks that need reference models: builds them in prepare() and records their cost."""

    access = "gray-box"
    needs_references = True

    def check(self, params) -> None:
        if getattr(params, "mode", "offline") == "online" and params.references % 2:
            raise ConfigError(f"attack {self.name}: online references come in complementary pairs; references must be "
                              f"even, got {params.references}")
        self.refs = None
        self.reference_queries = 0

    def build_references(self, loaded, mode: str):
        from diffmia.targets.references import reference_models

        self.refs = reference_models(loaded, self.params.references, mode, seed=self.seed, progress=sys.stderr.isatty(), log=print)
        return self.refs

    def extra_info(self) -> dict:
        info = {"reference_queries": self.reference_queries}
        if self.refs is not None:
            info["references"] = self.refs.info()
        return info


@register_attack
class LiRA(ReferenceAttack):
    name = "lira"
    paper = "Carlini et al., LiRA, arXiv 2112.03570; diffusion: arXiv 2301.13188"
    Params = LiRAParams

    def queries_per_sample(self, target) -> int:
        return self.params.draws

    def phi(self, target, images, ids, captions) -> np.ndarray:
        return log_loss_statistic(denoising_losses(target, images, ids, captions, self.params.timestep,
                                                   self.params.draws, self.seed))

    def prepare(self, loaded, cache_dir) -> None:
        from diffmia.targets.references import pool_indices

        p = self.params
        if p.timestep >= loaded.target.num_train_timesteps:
            raise ConfigError(f"attack lira: timestep {p.timestep} is beyond the target's "
                              f"{loaded.target.num_train_timesteps} diffusion steps")
        refs = self.build_references(loaded, p.mode)
        self.ids = pool_indices(loaded.manifest)
        images, captions = images_of(loaded, self.ids)
        stats = []
        for ref in refs.targets(loaded.target.device):
            stats.append(self.phi(ref, images, self.ids, captions))
            self.reference_queries += ref.queries.sample_queries
        stats = np.stack(stats)  # (N, n)
        is_in = refs.is_in(self.ids)
        fixed = p.fixed_variance if p.fixed_variance is not None else len(refs) < 64
        self.position = {i: k for k, i in enumerate(self.ids)}
        out_vals = np.where(~is_in, stats, np.nan)
        self.mu_out = np.nanmedian(out_vals, 0)
        self.s_out = np.full(len(self.ids), np.nanstd(out_vals)) if fixed else np.nanstd(out_vals, 0)
        if p.mode == "online":
            in_vals = np.where(is_in, stats, np.nan)
            self.mu_in = np.nanmedian(in_vals, 0)
            self.s_in = np.full(len(self.ids), np.nanstd(in_vals)) if fixed else np.nanstd(in_vals, 0)
        self.s_out = np.maximum(self.s_out, 1e-12)

    def score(self, target, batch: AttackBatch) -> torch.Tensor:
        if self.refs is None:
            raise RuntimeError("lira: prepare() was not called (the runner does this)")
        missing = [int(i) for i in batch.ids if int(i) not in self.position]
        if missing:
            raise ConfigError(f"attack lira: images {missing[:5]} are not in the reference pool")
        phi = self.phi(target, batch.images, list(batch.ids), batch.captions)
        k = np.asarray([self.position[int(i)] for i in batch.ids])
        if self.params.mode == "offline":
            return torch.as_tensor((self.mu_out[k] - phi) / self.s_out[k], dtype=torch.float32)
        s_in = np.maximum(self.s_in[k], 1e-12)

        def logpdf(x, mu, s):
            return -0.5 * ((x - mu) / s) ** 2 - np.log(s)

        score = logpdf(phi, self.mu_in[k], s_in) - logpdf(phi, self.mu_out[k], self.s_out[k])
        return torch.as_tensor(score, dtype=torch.float32)
