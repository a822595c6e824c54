"""Captions for the embedded digits set, derived from what is measurable in each scan.

Each caption names the digit and three measured properties, each cut into tertiles over the whole set:
stroke thickness (mean ink), slant (shear of the ink's second moments) and size (ink bounding-box area).
Text-conditioned targets therefore get image-specific captions, e.g. "a large thick right-slanted digit seven".

Each image also has paraphrases (`digit_caption_variants`): the same four facts in other templates and word orders,
with synonyms and an optional style word ("a big bold right-leaning seven, in pencil"). Text targets train on all of
them (one drawn per step), so meaning-preserving rewrites of a caption exist in the target's own vocabulary: that is
what SD-MIA's token and style views need. The first variant is always the canonical caption, the one attacks query.
"""

from __future__ import annotations

import random

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


# Synonyms per attribute value (the first is the canonical word); every word here is in a text target's vocabulary.
SYNONYMS = {
    "thin": ["thin", "fine"],
    "regular": ["regular", "normal"],
    "thick": ["thick", "bold"],
    "left-slanted": ["left-slanted", "left-leaning"],
    "upright": ["upright", "straight"],
    "right-slanted": ["right-slanted", "right-leaning"],
    "small": ["small", "little"],
    "medium": ["medium", "mid-sized"],
    "large": ["large", "big"],
}
STYLE_WORDS = ["handwritten", "scanned", "ink", "pencil", "grayscale", "sketched"]
TEMPLATES = [
    "a {size} {thick} {slant} digit {name}",
    "a {thick} {size} {slant} digit {name}",
    "a {size} {slant} {thick} digit {name}",
    "the digit {name}, {size}, {thick} and {slant}",
    "a {size} {thick} {slant} {name}",
]
STYLED = ["{caption}, {style}", "{caption}, in {style} style", "{style} image of {caption}"]


def _render(template: str, size: str, thick: str, slant: str, name: str, rng: random.Random) -> str:
    pick = lambda word: rng.choice(SYNONYMS[word])  # noqa: E731
    return template.format(size=pick(size), thick=pick(thick), slant=pick(slant), name=name)


def digit_caption_variants(captions: list[str], variants: int = 6, seed: int = 0) -> list[list[str]]:
    """For each canonical caption (from digit_captions), `variants` distinct captions: the canonical one first, then
    paraphrases (template, synonyms) of which about half carry one style word. Seeded per image: stable."""
    out = []
    for i, caption in enumerate(captions):
        parts = caption.split()  # "a SIZE THICK SLANT digit NAME"
        size, thick, slant, name = parts[1], parts[2], parts[3], parts[5]
        rng = random.Random(f"{seed}|{i}")
        seen = [caption]
        for _ in range(50 * variants):
            if len(seen) >= variants:
                break
            text = _render(rng.choice(TEMPLATES), size, thick, slant, name, rng)
            if rng.random() < 0.5:
                text = rng.choice(STYLED).format(style=rng.choice(STYLE_WORDS), caption=text)
            if text not in seen:
                seen.append(text)
        out.append(seen)
    return out
