"""Quantile regression: no reference diffusion models (Bertran et al., "Scalable Membership Inference Attacks via
Quantile Regression", arXiv 2307.03694, official code amazon-science/quantile-mia; on diffusion models Tang et al.,
"Membership Inference Attacks on Diffusion Models via Quantile Regression", arXiv 2312.05140).

The target's per-image statistic s(x) (higher = member: minus SecMI's t-error, the diffusion paper's, or minus the
naive loss) is known for the public split, which the target never trained on. A small CNN on the images learns the
conditional distribution of s among non-members:
- `head: gaussian` (default; the official code's `use_gaussian`): outputs (mu(x), log sigma(x)), trained with the
  official Gaussian negative log-likelihood log sigma + (s - mu)^2 / (2 sigma^2). x is called a member at level
  alpha when s(x) >= mu(x) + sigma(x) Phi^-1(1 - alpha); the level score is z(x) = (s(x) - mu(x)) / sigma(x).
- `head: quantiles`: outputs one threshold per quantile level 1 - alpha_j (alpha_j log-spaced, `levels`), trained with
  the pinball loss alpha max(s - q, 0) + (1 - alpha) max(q - s, 0) summed over levels (official pinball_loss_fn),
  sorted per image (the official rearrangement). The level score is the quantile level at which s(x) sits, linear
  between the predicted thresholds (and continued monotonically past the first and last, so no image ties).
Sweeping a threshold over the level score is the official ROC (the rate sweep over the quantile level, QMIA's
get_rates): a threshold 1 - alpha_j (z_alpha for the Gaussian head) flags exactly the images with s(x) >= q_j(x).
Tang et al.'s bag of weak attackers: B regressors, each trained on a bootstrap sample of the public split's training
part (the epoch kept whose loss on the rows out of its bootstrap sample is lowest), vote at each level; a strict majority flags x. The score is therefore the (floor(B / 2) + 1)-th largest of the B
level scores, which at every threshold is the majority vote.
The last `holdout` share of the public split (seeded) trains nothing: on it the false-positive rate of the level
alpha threshold is measured and recorded (`held_out_fpr`: close to alpha when the regressor is calibrated).
Queries per audited image: the statistic's (SecMI 11, loss 1); the public split's queries are reported apart.
"""

from __future__ import annotations

import copy
import math
from typing import Literal

import numpy as np
import torch
from pydantic import Field

from .base import Attack, AttackBatch, AttackParams, batch_of, build_attack, register_attack


class QuantileRegressionParams(AttackParams):
    statistic: Literal["secmi", "loss"] = Field("secmi", description="per-image statistic (lower = member)")
    timestep: int = Field(100, ge=1, le=9999, description="loss statistic: its timestep")
    head: Literal["gaussian", "quantiles"] = Field("gaussian", description="the regressor's output")
    levels: int = Field(
        16, ge=2, le=200, description="quantiles head: levels 1 - alpha, alpha log-spaced in [1e-3, 0.5]"
    )
    alpha: float = Field(
        0.01, gt=0.0, lt=0.5, description="the false-positive rate checked on the held-out public images"
    )
    bags: int = Field(5, ge=1, le=100, description="regressors on bootstrap samples, majority vote")
    epochs: int = Field(60, ge=1, le=5000, description="training epochs of each regressor")
    width: int = Field(32, ge=4, le=512, description="CNN channels")
    holdout: float = Field(0.2, ge=0.0, lt=0.9, description="share of the public split kept out of training")


def quantile_levels(count: int) -> np.ndarray:
    """Levels 1 - alpha for alpha log-spaced from 1e-3 to 0.5, ascending (the official code's 1 - logspace)."""
    return np.sort(1.0 - np.logspace(-3, math.log10(0.5), count))


class QuantileCNN(torch.nn.Module):
    """A small CNN from images to the head's outputs (2 for Gaussian, one per level for quantiles)."""

    def __init__(self, channels: int, outputs: int, width: int):
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Conv2d(channels, width, 3, padding=1),
            torch.nn.ReLU(),
            torch.nn.Conv2d(width, 2 * width, 3, stride=2, padding=1),
            torch.nn.ReLU(),
            torch.nn.Conv2d(2 * width, 2 * width, 3, stride=2, padding=1),
            torch.nn.ReLU(),
            torch.nn.AdaptiveAvgPool2d(1),
            torch.nn.Flatten(),
            torch.nn.Linear(2 * width, 64),
            torch.nn.ReLU(),
            torch.nn.Linear(64, outputs),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def gaussian_loss(out: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """The official gaussian_loss_fn: log sigma + (s - mu)^2 / (2 sigma^2)."""
    mu, log_std = out[:, 0], out[:, 1]
    return (log_std + 0.5 * torch.exp(-2 * log_std) * (s - mu) ** 2).mean()


def pinball_loss(out: torch.Tensor, s: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """The official pinball_loss_fn, summed over levels: tau max(s - q, 0) + (1 - tau) max(q - s, 0)."""
    delta = s[:, None] - out
    return (torch.relu(delta) * levels + torch.relu(-delta) * (1 - levels)).sum(1).mean()


def gaussian_level_scores(s: np.ndarray, mu: np.ndarray, log_std: np.ndarray) -> np.ndarray:
    """z = (s - mu) / sigma: z >= Phi^-1(1 - alpha) iff s >= the predicted (1 - alpha)-quantile."""
    return (s - mu) / np.exp(log_std)


def quantile_level_scores(s: np.ndarray, thresholds: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """The level at which s sits among each image's sorted thresholds (n, Q): score >= levels[j] iff s >= q_j;
    past the ends continued monotonically (exponentially towards 0 and 1), so images beyond them keep their order."""
    q = np.sort(thresholds, axis=1)
    out = np.empty(len(s))
    for i in range(len(s)):
        lo_gap = max(q[i, 1] - q[i, 0], 1e-12)
        hi_gap = max(q[i, -1] - q[i, -2], 1e-12)
        if s[i] < q[i, 0]:
            out[i] = levels[0] * math.exp((s[i] - q[i, 0]) / lo_gap)
        elif s[i] > q[i, -1]:
            out[i] = levels[-1] + (1 - levels[-1]) * -math.expm1(-(s[i] - q[i, -1]) / hi_gap)
        else:
            out[i] = np.interp(s[i], q[i], levels)
    return out


def majority_vote(level_scores: np.ndarray) -> np.ndarray:
    """(B, n) level scores of B bags -> the (floor(B / 2) + 1)-th largest per image: at any threshold, at least a
    strict majority of the bags flag the image iff this score reaches it."""
    ordered = -np.sort(-level_scores, axis=0)
    return ordered[len(level_scores) // 2]


def regressor_input(images: torch.Tensor) -> torch.Tensor:
    """Images as the CNN sees them: at most 32 x 32 (average-pooled)."""
    return torch.nn.functional.adaptive_avg_pool2d(images, 32) if images.shape[-1] > 32 else images


@register_attack
class QuantileRegression(Attack):
    name = "quantile_regression"
    needs_public = "trains on public non-members: give --public FOLDER"
    access = "gray-box"
    paper = (
        "Bertran et al., quantile-regression MIA, arXiv 2307.03694 (official code amazon-science/quantile-mia); "
        "Tang et al., on diffusion models, arXiv 2312.05140"
    )
    Params = QuantileRegressionParams

    def check(self, p: QuantileRegressionParams) -> None:
        self.statistic = (
            build_attack("secmi", seed=self.seed)
            if p.statistic == "secmi"
            else build_attack("naive_loss", {"timestep": p.timestep}, seed=self.seed)
        )
        self.models = []
        self.public_queries = 0
        self.levels = quantile_levels(p.levels)

    def queries_per_sample(self, target) -> int:
        return self.statistic.queries_per_sample(target)

    def stat(self, target, batch: AttackBatch) -> np.ndarray:
        """s(x), higher = member (the underlying attack's score)."""
        return np.concatenate(
            [self.statistic.score(target, part.to(target.device)).double().cpu().numpy() for part in batch.chunks(256)]
        )

    def loss(self, model: QuantileCNN, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        out = model(x)
        if self.params.head == "gaussian":
            return gaussian_loss(out, target)
        return pinball_loss(out, target, torch.as_tensor(self.levels, dtype=torch.float32))

    def fit(self, x: torch.Tensor, s: np.ndarray, rows: np.ndarray, seed: int) -> QuantileCNN:
        """One bag: trained on the bootstrap rows, the epoch kept whose loss on the rows left out of the bootstrap
        (out of bag) is lowest (the official code keeps its best validation-loss checkpoint)."""
        p = self.params
        gen = torch.Generator().manual_seed(seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = QuantileCNN(x.shape[1], 2 if p.head == "gaussian" else p.levels, p.width)
        target = torch.as_tensor((s - self.s_mean) / self.s_scale, dtype=torch.float32)
        bag = torch.as_tensor(rows)
        oob = torch.as_tensor(np.setdiff1d(np.arange(len(x)), rows))
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        best, best_state = math.inf, copy.deepcopy(model.state_dict())
        for _ in range(p.epochs):
            model.train()
            for part in bag[torch.randperm(len(bag), generator=gen)].split(128):
                loss = self.loss(model, x[part], target[part])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            if len(oob):
                model.eval()
                with torch.no_grad():
                    held = float(self.loss(model, x[oob], target[oob]))
                if held < best:
                    best, best_state = held, copy.deepcopy(model.state_dict())
        if len(oob):
            model.load_state_dict(best_state)
        return model.eval()

    def level_scores(self, images: torch.Tensor, s: np.ndarray) -> np.ndarray:
        """(B, n): each bag's level score of each image (the small regressors run on the CPU)."""
        x = regressor_input(images.float().cpu())
        standard = (s - self.s_mean) / self.s_scale
        out = []
        with torch.no_grad():
            for model in self.models:
                pred = model(x).double().numpy()
                out.append(
                    gaussian_level_scores(standard, pred[:, 0], pred[:, 1])
                    if self.params.head == "gaussian"
                    else quantile_level_scores(standard, pred, self.levels)
                )
        return np.stack(out)

    def level_threshold(self, alpha: float) -> float:
        """The level-score threshold of a false-positive rate alpha."""
        from scipy.stats import norm

        return float(norm.ppf(1 - alpha)) if self.params.head == "gaussian" else 1.0 - alpha

    def prepare(self, loaded, cache_dir) -> None:
        p = self.params
        public = batch_of(loaded, loaded.manifest.indices("public"))
        before = loaded.target.queries.sample_queries
        values = self.stat(loaded.target, public)
        self.public_queries = loaded.target.queries.sample_queries - before
        x = regressor_input(public.images.float())
        rng = np.random.default_rng([self.seed, 401])
        order = rng.permutation(len(values))
        held = order[: int(round(p.holdout * len(values)))]
        train = np.sort(order[len(held) :])
        self.s_mean, self.s_scale = float(values[train].mean()), float(values[train].std() or 1.0)
        self.models = []
        x_train, s_train = x[torch.as_tensor(train)], values[train]
        for _ in range(p.bags):
            rows = rng.choice(len(train), len(train), replace=True)
            self.models.append(self.fit(x_train, s_train, rows, int(rng.integers(2**31))))
        self.held_out_fpr = {}
        if len(held):
            scores = majority_vote(self.level_scores(public.images[torch.as_tensor(held)], values[held]))
            for alpha in sorted({p.alpha, 0.05, 0.1}):
                self.held_out_fpr[str(alpha)] = float(np.mean(scores >= self.level_threshold(alpha)))
        self.held_out = int(len(held))

    def score(self, target, batch: AttackBatch) -> torch.Tensor:
        if not self.models:
            raise RuntimeError("quantile_regression: prepare() was not called (the runner does this)")
        scores = majority_vote(self.level_scores(batch.images, self.stat(target, batch)))
        return torch.as_tensor(scores, dtype=torch.float32)

    def extra_info(self) -> dict:
        return {
            "public_queries": self.public_queries,
            "held_out_public": getattr(self, "held_out", 0),
            "held_out_fpr": getattr(self, "held_out_fpr", None),
        }
