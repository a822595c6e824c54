"""Captions for the embedded digits set, derived from what is measurable in each scan.

Each caption names the digit and three measured properties, each cut into tertiles over the whole set:
stroke thickness (mean ink), slant (shear of the ink's second moments) and size (ink bounding-box area).
Text-conditioned targets therefore get image-specific captions, e.g. "a large thick right-slanted digit seven".
"""
from __future__ import annotations

import numpy as np

DIGIT_NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
THICKNESS_WORDS = ["thin", "regular", "thick"]
SLANT_WORDS = ["left-slanted", "upright", "right-slanted"]
SIZE_WORDS = ["small", "medium", "large"]


def measure(images: np.ndarray) -> dict[str, np.ndarray]:
    """Per-image thickness, slant and size of grayscale scans shaped (N, H, W), ink = high values."""
    ink = images.astype(np.float64)
    ink = ink / max(ink.max(), 1e-12)
    n, h, w = ink.shape
    rows, cols = np.mgrid[0:h, 0:w]
    mass = ink.sum(axis=(1, 2)) + 1e-12
    thickness = ink.mean(axis=(1, 2))
    mean_r = (ink * rows).sum(axis=(1, 2)) / mass
    mean_c = (ink * cols).sum(axis=(1, 2)) / mass
    dr = rows[None] - mean_r[:, None, None]
    dc = cols[None] - mean_c[:, None, None]
    cov_rc = (ink * dr * dc).sum(axis=(1, 2)) / mass
    var_r = (ink * dr * dr).sum(axis=(1, 2)) / mass + 1e-12
    # rows grow downwards: a stroke whose top leans right has columns falling as rows grow
    slant = -cov_rc / var_r
    on = ink > 0.25
    size = np.zeros(n)
    for i in range(n):
        r, c = np.nonzero(on[i])
        if len(r):
            size[i] = (r.max() - r.min() + 1) * (c.max() - c.min() + 1)
    return {"thickness": thickness, "slant": slant, "size": size}


def _tertile(values: np.ndarray) -> np.ndarray:
    lo, hi = np.quantile(values, [1 / 3, 2 / 3])
    return np.digitize(values, [lo, hi])


def digit_captions(images: np.ndarray, labels: np.ndarray) -> list[str]:
    m = measure(images)
    thick, slant, size = _tertile(m["thickness"]), _tertile(m["slant"]), _tertile(m["size"])
    return [
        f"a {SIZE_WORDS[size[i]]} {THICKNESS_WORDS[thick[i]]} {SLANT_WORDS[slant[i]]} digit {DIGIT_NAMES[labels[i]]}"
        for i in range(len(labels))
    ]
