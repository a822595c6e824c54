"""ReDiffuse (Li et al., arXiv 2405.20771): black-box membership inference through image variation.

The official DDPM setting: the image is noised to t = 200 and denoised back with deterministic DDIM at interval
k = 100 (2 steps), `repeats` = 10 times with fresh noise (through the target's image-variation call only, with the
image's caption for text models); the variations are averaged into x_hat. 20 queries, 10 generated images per image.

Two scores, labelled apart in every table:
- `classifier: none` (default): S = -||x_hat - x||^2, the distance alone, no labels used;
- `classifier: cnn`: the paper's supervised variant (its DDIM CIFAR-10 AUC .96 comes from this one): a classifier on
  the residual image |x - x_hat| (the paper: a ResNet-18 on 20% of the labels; here a small CNN) trained on the
  calibration split only, and S = its logit. The test halves are never seen in training.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
import torch
from pydantic import Field

from .base import Attack, AttackBatch, AttackParams, register_attack


class ReDiffuseParams(AttackParams):
    timestep: int = Field(200, ge=1, le=999, description="noise level the image is pushed to (official DDPM: 200)")
    repeats: int = Field(10, ge=1, le=100, description="variations averaged (official: 10)")
    steps: int = Field(
        2, ge=1, le=200, description="DDIM steps back to the image (official: interval 100 from 200 = 2)"
    )
    classifier: Literal["none", "cnn"] = Field("none", description="cnn: the supervised variant, fit on calibration")
    cnn_epochs: int = Field(200, ge=1, le=5000)
    cnn_learning_rate: float = Field(1e-3, gt=0.0, le=1.0)


class ResidualCNN(torch.nn.Module):
    """A small CNN over residual images (downsampled to at most 64x64), one logit out."""

    def __init__(self, channels: int):
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Conv2d(channels, 16, 3, padding=1),
            torch.nn.ReLU(),
            torch.nn.Conv2d(16, 32, 3, padding=1),
            torch.nn.ReLU(),
            torch.nn.AdaptiveAvgPool2d(1),
            torch.nn.Flatten(),
            torch.nn.Linear(32, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] > 64:
            x = torch.nn.functional.adaptive_avg_pool2d(x, 64)
        return self.net(x)[:, 0]


def train_residual_classifier(
    residuals: torch.Tensor, labels: torch.Tensor, epochs: int, lr: float, seed: int
) -> ResidualCNN:
    """Full-batch Adam on the binary cross-entropy, seeded: the same inputs give the same classifier."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ResidualCNN(residuals.shape[1])
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        for _ in range(epochs):
            opt.zero_grad()
            loss = torch.nn.functional.binary_cross_entropy_with_logits(model(residuals), labels.float())
            loss.backward()
            opt.step()
    return model.eval()


@register_attack
class ReDiffuse(Attack):
    name = "rediffuse"
    access = "black-box"
    paper = "Li et al., ReDiffuse, arXiv 2405.20771"
    Params = ReDiffuseParams

    def check(self, params: ReDiffuseParams) -> None:
        self.components = ("distance",) if params.classifier == "cnn" else ()
        self.residuals: dict[int, torch.Tensor] = {}

    def queries_per_sample(self, target) -> int:
        return self.params.repeats * self.params.steps

    def generations_per_sample(self, target) -> int:
        return self.params.repeats

    def score(self, target, batch: AttackBatch):
        p = self.params
        total = torch.zeros_like(batch.images)
        for r in range(p.repeats):
            noise = self.noise(batch, target.sample_shape, draw=r)
            total += target.vary(batch.images, p.timestep, p.steps, noise, batch.captions)
        residual = total / p.repeats - batch.images
        distance = -(residual**2).flatten(1).sum(1)
        if p.classifier == "none":
            return distance
        for i, r in zip(batch.ids, residual.abs()):
            self.residuals[int(i)] = r.cpu()  # kept for combine(): on the CPU, not the device's memory
        return {"distance": distance}

    def combine(self, frame: pd.DataFrame) -> np.ndarray:
        """Supervised variant: train on the calibration rows' residuals, score every row."""
        x = torch.stack([self.residuals[int(i)] for i in frame.sample_id])
        cal = torch.tensor((frame.split == "calibration").to_numpy())
        labels = torch.tensor(frame.is_member.to_numpy())
        model = train_residual_classifier(
            x[cal], labels[cal], self.params.cnn_epochs, self.params.cnn_learning_rate, self.seed
        )
        with torch.no_grad():
            logits = model(x)
        self.fitted = {"classifier": "cnn", "trained_on": int(cal.sum()), "epochs": self.params.cnn_epochs}
        return logits.numpy().astype(np.float64)

    def extra_info(self) -> dict:
        return {"fitted": self.fitted} if hasattr(self, "fitted") else {}
