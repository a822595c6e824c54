"""Per-image statistics that reference-model attacks compute the same way on the target and on every reference:
the denoising loss at a fixed timestep over seeded noise draws (the same draws for every model), in batches.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from .base import add_noise, per_sample_noise


@torch.no_grad()
def denoising_losses(target, images: torch.Tensor, ids: Sequence[int], captions, timestep: int, draws: int,
                     seed: int, batch_size: int = 256) -> np.ndarray:
    """(len(ids), draws) losses ||eps - eps_theta(x_t, t[, c])||^2 / D, noise seeded by (seed, id, draw). Counted."""
    out = []
    for start in range(0, len(ids), batch_size):
        sl = slice(start, start + batch_size)
        z = target.encode(images[sl])
        cond = list(captions[sl]) if captions is not None else None
        rows = []
        for d in range(draws):
            eps = per_sample_noise(ids[sl], z.shape[1:], seed, d)
            pred = target.predict_noise(add_noise(target, z, eps, timestep), timestep, cond)
            rows.append(((pred - eps) ** 2).flatten(1).mean(1))
        out.append(torch.stack(rows, 1).double())
    return torch.cat(out).numpy()


def log_loss_statistic(losses: np.ndarray) -> np.ndarray:
    """LiRA's phi: the mean over draws of log L_t (Carlini et al. 2023 use the loss at t = 100)."""
    return np.log(np.maximum(losses, 1e-30)).mean(1)


def images_of(loaded, ids: Sequence[int]):
    """Images (at the run's resolution) and captions (text targets) of dataset indices."""
    images = loaded.images.tensor(list(ids), loaded.resolution)
    captions = [loaded.images.captions[i] for i in ids] if loaded.target.conditional else None
    return images, captions
