"""Quantile regression (Tang et al., "Membership Inference Attacks on Diffusion Models via Quantile Regression",
arXiv 2312.05140): no reference diffusion models.

On the public split (known non-members), regressors learn to predict from an image the alpha-quantile of the target's
per-image statistic among non-members, with the pinball loss alpha*max(l - q, 0) + (1 - alpha)*max(q - l, 0)
(scikit-learn's HistGradientBoostingRegressor with loss="quantile"; features: the image's pixels, average-pooled to at
most 16x16). B regressors are fitted on bootstrap samples (bagging) and averaged. The statistic is SecMI's t-error
(the paper's) or the naive loss, both "lower = member"; score = q_alpha(x) - l(x), so x is called a member at score
> 0 and, by construction, that threshold has a false-positive rate of about alpha. Queries per audited image: the
statistic's (SecMI 11, loss 1); the public split's queries are reported apart.
"""
from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from pydantic import Field

from .base import Attack, AttackBatch, AttackParams, batch_of, build_attack, register_attack


class QuantileRegressionParams(AttackParams):
    statistic: Literal["secmi", "loss"] = Field("secmi", description="per-image statistic (lower = member)")
    timestep: int = Field(100, ge=1, le=9999, description="loss statistic: its timestep")
    alpha: float = Field(0.01, gt=0.0, lt=0.5, description="target false-positive rate = the quantile learned")
    bags: int = Field(8, ge=1, le=100)
    max_iter: int = Field(200, ge=10, le=5000, description="boosting iterations per regressor")


def image_features(images: torch.Tensor) -> np.ndarray:
    if images.shape[-1] > 16:
        images = torch.nn.functional.adaptive_avg_pool2d(images, 16)
    return images.flatten(1).double().numpy()


@register_attack
class QuantileRegression(Attack):
    name = "quantile_regression"
    access = "gray-box"
    paper = "Tang et al., quantile regression MIA on diffusion models, arXiv 2312.05140"
    Params = QuantileRegressionParams

    def check(self, p: QuantileRegressionParams) -> None:
        self.statistic = build_attack("secmi", seed=self.seed) if p.statistic == "secmi" else \
            build_attack("naive_loss", {"timestep": p.timestep}, seed=self.seed)
        self.models = []
        self.public_queries = 0

    def queries_per_sample(self, target) -> int:
        return self.statistic.queries_per_sample(target)

    def stat(self, target, batch: AttackBatch) -> np.ndarray:
        """The statistic, lower = member (the negated score of the underlying attack)."""
        return np.concatenate([-self.statistic.score(target, part).double().numpy() for part in batch.chunks(256)])

    def prepare(self, loaded, cache_dir) -> None:
        from sklearn.ensemble import HistGradientBoostingRegressor

        p = self.params
        public = batch_of(loaded, loaded.manifest.indices("public"))
        before = loaded.target.queries.sample_queries
        values = self.stat(loaded.target, public)
        self.public_queries = loaded.target.queries.sample_queries - before
        x = image_features(public.images)
        rng = np.random.default_rng([self.seed, 401])
        self.models = []
        for b in range(p.bags):
            rows = rng.integers(0, len(x), len(x))
            model = HistGradientBoostingRegressor(loss="quantile", quantile=p.alpha, max_iter=p.max_iter,
                                                  random_state=int(rng.integers(2**31)))
            self.models.append(model.fit(x[rows], values[rows]))
        predicted = np.mean([m.predict(x) for m in self.models], 0)
        self.public_fpr = float(np.mean(values < predicted))  # in-sample check: about alpha

    def score(self, target, batch: AttackBatch) -> torch.Tensor:
        if not self.models:
            raise RuntimeError("quantile_regression: prepare() was not called (the runner does this)")
        values = self.stat(target, batch)
        q = np.mean([m.predict(image_features(batch.images)) for m in self.models], 0)
        return torch.as_tensor(q - values, dtype=torch.float32)

    def extra_info(self) -> dict:
        return {"public_queries": self.public_queries, "public_images_below_quantile": getattr(self, "public_fpr", None)}
