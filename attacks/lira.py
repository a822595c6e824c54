"""LiRA: the likelihood-ratio attack with reference models (Carlini et al., arXiv 2112.03570; for diffusion models,
Carlini et al. 2023, arXiv 2301.13188: 16 DDPMs on random halves of CIFAR-10, the loss at t = 100).

Statistic per (model, image): phi = mean over J seeded noise draws of log L_t, L_t = ||eps - eps_theta(x_t, t)||^2 / D,
the same draws for the target and every reference. References come from targets/references.py (the same recipe on
other subsets, cached and shared):
- `mode: online` (every pool image IN exactly N/2 references): per image mu_in, mu_out = the medians of the IN and OUT
  references' phi, and score = log N(phi; mu_in, s_in^2) - log N(phi; mu_out, s_out^2);
- `mode: offline` (references trained on the public split only, all OUT): score = (mu_out - phi) / s_out, the
  one-sided test's statistic (Phi of it is the paper's offline score; the same ranking). The paper's one-sided test
  is kept on purpose: the official code (tensorflow/privacy's LiRA `score_offline`) scores offline with the OUT
  log-density, -log N(phi; mu_out, s_out^2), a two-sided test that also flags images fitted far WORSE than the
  references predict, which for a loss is not evidence of membership.
With fewer than 64 references (or `fixed_variance: true`) the variances are global, as the official code's
fix_variance (tensorflow/privacy research/mi_lira_2021, `generate_ours`): online, one standard deviation of all IN
values for both s_in and s_out (the official code's choice); offline, that of all OUT values. The official code
scores each augmentation and averages the log-ratios; here each noise draw's loss is averaged into phi first (the
same with one draw). Queries per audited image: J on the target; the
references' queries and training time are reported apart.
"""

from __future__ import annotations

from typing import Literal, Optional

import numpy as np
import torch
from pydantic import Field

from diffmia.core.config import ConfigError

from .base import AttackBatch, AttackParams, batch_of, register_attack
from .reference_attack import ReferenceAttack
from .statistics import denoising_losses, log_loss_statistic


class LiRAParams(AttackParams):
    references: int = Field(8, ge=1, le=256, description="N reference models")
    mode: Literal["online", "offline"] = "online"
    timestep: int = Field(100, ge=0, le=9999, description="t of the loss (100 in Carlini et al. 2023)")
    draws: int = Field(4, ge=1, le=64, description="J noise draws averaged, the same for every model")
    fixed_variance: Optional[bool] = Field(None, description="global variances (None: when N < 64)")


@register_attack
class LiRA(ReferenceAttack):
    name = "lira"
    paper = "Carlini et al., LiRA, arXiv 2112.03570; diffusion: arXiv 2301.13188"
    Params = LiRAParams

    def queries_per_sample(self, target) -> int:
        return self.params.draws

    def phi(self, target, batch: AttackBatch) -> np.ndarray:
        return log_loss_statistic(denoising_losses(target, batch, self.params.timestep, self.params.draws, self.seed))

    def prepare(self, loaded, cache_dir) -> None:
        from diffmia.targets.references import pool_indices

        p = self.params
        if p.timestep >= loaded.target.num_train_timesteps:
            raise ConfigError(
                f"attack lira: timestep {p.timestep} is beyond the target's "
                f"{loaded.target.num_train_timesteps} diffusion steps"
            )
        refs = self.build_references(loaded, p.mode)
        ids = pool_indices(loaded.manifest)
        pool = batch_of(loaded, ids)
        stats = np.stack(self.over_references(loaded, lambda r, ref: self.phi(ref, pool)))  # (N, n)
        is_in = refs.is_in(ids)
        fixed = p.fixed_variance if p.fixed_variance is not None else len(refs) < 64
        self.position = {i: k for k, i in enumerate(ids)}

        self.fitted = fit_references(stats, is_in, p.mode, fixed)

    def score(self, target, batch: AttackBatch) -> torch.Tensor:
        k = self.positions(batch.ids)
        fitted = {name: values[k] for name, values in self.fitted.items()}
        return torch.as_tensor(lira_scores(self.phi(target, batch), fitted, self.params.mode), dtype=torch.float32)


def fit_references(stats: np.ndarray, is_in: np.ndarray, mode: str, fixed: bool) -> dict[str, np.ndarray]:
    """Per image: the medians of the IN and OUT references' phi (stats (N, n), is_in (N, n)) and their standard
    deviations, global when `fixed` (online: the IN values' for both, as the official fix_variance)."""

    def fit(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        spread = np.full(values.shape[1], np.nanstd(values)) if fixed else np.nanstd(values, 0)
        return np.nanmedian(values, 0), np.maximum(spread, 1e-12)

    mu_out, s_out = fit(np.where(~is_in, stats, np.nan))
    if mode == "offline":
        return {"mu_out": mu_out, "s_out": s_out}
    mu_in, s_in = fit(np.where(is_in, stats, np.nan))
    if fixed:
        s_out = s_in
    return {"mu_in": mu_in, "s_in": s_in, "mu_out": mu_out, "s_out": s_out}


def lira_scores(phi: np.ndarray, fitted: dict[str, np.ndarray], mode: str) -> np.ndarray:
    """Online: log N(phi; mu_in, s_in^2) - log N(phi; mu_out, s_out^2); offline: (mu_out - phi) / s_out (one-sided).
    Higher = member."""
    if mode == "offline":
        return (fitted["mu_out"] - phi) / fitted["s_out"]

    def logpdf(x, mu, s):
        return -0.5 * ((x - mu) / s) ** 2 - np.log(s)

    return logpdf(phi, fitted["mu_in"], fitted["s_in"]) - logpdf(phi, fitted["mu_out"], fitted["s_out"])
