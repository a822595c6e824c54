"""Per-image statistics that reference-model attacks compute the same way on the target and on every reference:
the denoising loss at a fixed timestep over seeded noise draws (the same draws for every model), in batches.
"""

from __future__ import annotations

import numpy as np
import torch

from diffmia.core.devices import to_device

from .base import AttackBatch, add_noise, per_sample_noise


@torch.no_grad()
def denoising_losses(
    target, batch: AttackBatch, timestep: int, draws: int, seed: int, batch_size: int = 256
) -> np.ndarray:
    """(len(batch.ids), draws) losses ||eps - eps_theta(x_t, t[, c])||^2 / D, noise seeded by (seed, id, draw).
    Counted."""
    out = []
    for part in batch.chunks(batch_size):
        part = part.to(target.device)
        z = target.encode(part.images)
        rows = []
        for d in range(draws):
            eps = to_device(per_sample_noise(part.ids, z.shape[1:], seed, d), z.device)
            pred = target.predict_noise(add_noise(target, z, eps, timestep), timestep, part.captions)
            rows.append(((pred - eps) ** 2).flatten(1).mean(1))
        out.append(torch.stack(rows, 1).double().cpu())  # per-image statistics: the only copy back
    return torch.cat(out).numpy()


def log_loss_statistic(losses: np.ndarray) -> np.ndarray:
    """LiRA's phi: the mean over draws of log L_t (Carlini et al. 2023 use the loss at t = 100)."""
    return np.log(np.maximum(losses, 1e-30)).mean(1)
