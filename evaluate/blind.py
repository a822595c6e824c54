"""The blind baseline: can the member and non-member images be told apart without querying the model at all?

Member and non-member sets taken from different sources (another crawl, date, camera, JPEG quality or resizing) are
separable from the images alone, and every attack then looks strong while measuring the shift, not membership (Das
et al. arXiv 2406.16201, Duan et al. arXiv 2402.07841, CopyMark arXiv 2410.03640). Every results folder therefore
carries a model-free classifier beside the attacks:

- features of each image alone (`image_features`): intensity statistics and histogram, quantisation (distinct values,
  saturated pixels), sharpness (first differences, Laplacian), the radial power spectrum, JPEG blockiness at the 8 x 8
  grid, colour statistics, and an 8 x 8 grayscale thumbnail of the content;
- a standardised logistic regression (C = 0.1) cross-fitted on the calibration halves: each calibration image is scored by the fold model that did not see it, each test image by the mean of the
  fold models (trained on as many images as the ones scoring calibration, so calibration and test scores are alike);
- the same calibrated metrics and intervals as an attack (`evaluate_scores`), and for each attack a paired bootstrap of
  its AUC against the baseline's on the same test images (`compare.paired_difference`).

When the baseline's AUC interval lies above 0.5, the report says that the two sets differ in distribution, that attack
figures at that level are not evidence of membership, and which attacks still beat the baseline. A baseline at 0.5 is
no proof that the sets match: a stronger classifier, or features of the captions (not used here), may separate them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

BLIND_VERSION = 1
NAME = "blind-baseline"
FOLDS = 5
DESCRIPTION = (
    "a logistic regression on features of the images alone (intensity statistics and histogram, quantisation, "
    "sharpness, power spectrum, JPEG blockiness, colour, an 8 x 8 thumbnail), cross-fitted on the calibration halves; "
    "no model query"
)


def _cells(length: int, parts: int) -> list[np.ndarray]:
    return np.array_split(np.arange(length), min(parts, length))


def thumbnail(gray: np.ndarray, size: int = 8) -> np.ndarray:
    """(N, H, W) -> (N, size * size): the mean of each cell of a size x size grid (area resampling)."""
    rows, cols = _cells(gray.shape[1], size), _cells(gray.shape[2], size)
    out = np.zeros((len(gray), size, size))
    for i, r in enumerate(rows):
        for j, c in enumerate(cols):
            out[:, i, j] = gray[:, r[0] : r[-1] + 1, c[0] : c[-1] + 1].mean((1, 2))
    return out.reshape(len(gray), -1)


def spectrum_bands(gray: np.ndarray, bands: int = 6) -> np.ndarray:
    """Share of each radial frequency band in the power spectrum (mean removed), log-scaled: resizing and
    compression remove high frequencies."""
    n, h, w = gray.shape
    power = np.abs(np.fft.fft2(gray - gray.mean((1, 2), keepdims=True))) ** 2
    fy, fx = np.meshgrid(np.fft.fftfreq(h), np.fft.fftfreq(w), indexing="ij")
    radius = np.sqrt(fy**2 + fx**2) / np.sqrt(0.5)  # 0 .. 1
    edges = np.linspace(0, 1 + 1e-9, bands + 1)
    total = power.reshape(n, -1).sum(1) + 1e-12
    shares = [power[:, (radius >= lo) & (radius < hi)].sum(1) / total for lo, hi in zip(edges[:-1], edges[1:])]
    return np.log(np.stack(shares, 1) + 1e-6)


def blockiness(gray: np.ndarray, block: int = 8) -> np.ndarray:
    """(N, 2): mean absolute step across the 8-pixel grid lines over the mean step elsewhere, per axis (JPEG's
    block boundaries); 1 for images too small to hold two blocks."""
    out = np.ones((len(gray), 2))
    for axis in (1, 2):
        if gray.shape[axis] < 2 * block:
            continue
        steps = np.abs(np.diff(gray, axis=axis))
        at = np.arange(steps.shape[axis]) % block == block - 1
        on = np.take(steps, np.flatnonzero(at), axis=axis).mean((1, 2))
        off = np.take(steps, np.flatnonzero(~at), axis=axis).mean((1, 2))
        out[:, axis - 1] = on / (off + 1e-6)
    return out


def image_features(pixels: np.ndarray, max_value: int = 255, chunk: int = 64) -> np.ndarray:
    """(N, H, W, C) uint8 -> (N, F) float features of each image alone (no model, no other image), `chunk` images at
    a time (a float copy of 2000 RGB images at 512 x 512 would take 12 GB)."""
    return np.concatenate([_features(pixels[i : i + chunk], max_value) for i in range(0, len(pixels), chunk)])


def _features(pixels: np.ndarray, max_value: int) -> np.ndarray:
    x = pixels.astype(np.float64) / max_value
    n, h, w, c = x.shape
    gray = x.mean(-1)
    flat = x.reshape(n, -1, c)
    parts = [
        flat.mean(1),
        flat.std(1),
        np.percentile(flat, [1, 5, 25, 50, 75, 95, 99], axis=1).transpose(1, 0, 2).reshape(n, -1),
        np.stack([np.histogram(g, bins=16, range=(0.0, 1.0))[0] for g in gray]) / (h * w),
        # quantisation and clipping: a re-encoded image has other distinct values and saturation
        np.array([len(np.unique(p)) for p in pixels.reshape(n, -1)])[:, None] / min(h * w * c, max_value + 1),
        (x <= 0).reshape(n, -1).mean(1, keepdims=True),
        (x >= 1).reshape(n, -1).mean(1, keepdims=True),
        # sharpness
        np.abs(np.diff(gray, axis=2)).mean((1, 2))[:, None] if w > 1 else np.zeros((n, 1)),
        np.abs(np.diff(gray, axis=1)).mean((1, 2))[:, None] if h > 1 else np.zeros((n, 1)),
        np.abs(
            4 * gray[:, 1:-1, 1:-1] - gray[:, :-2, 1:-1] - gray[:, 2:, 1:-1] - gray[:, 1:-1, :-2] - gray[:, 1:-1, 2:]
        ).mean((1, 2))[:, None]
        if h > 2 and w > 2
        else np.zeros((n, 1)),
        spectrum_bands(gray),
        blockiness(gray),
        thumbnail(gray),
    ]
    if c == 3:  # colourfulness: channel differences and their spread
        rg, gb = x[..., 0] - x[..., 1], x[..., 1] - x[..., 2]
        parts.append(np.stack([np.abs(rg).mean((1, 2)), np.abs(gb).mean((1, 2)), rg.std((1, 2)), gb.std((1, 2))], 1))
    return np.concatenate(parts, 1)


def baseline_model(seed: int):
    """Standardised features, an L2 logistic regression at C = 0.1 (fixed: an inner search over C from 0.001 to 10
    changed no AUC of benchmarks/blind_baseline.py beyond its third decimal, at ten times the cost)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=5000))


def cross_fit(features: np.ndarray, is_member: np.ndarray, split: np.ndarray, seed: int = 0) -> np.ndarray:
    """Scores (higher: more member-like) fitted on the calibration halves only: a calibration image from the fold
    model that did not see it, a test image from the mean of the fold models."""
    from sklearn.model_selection import StratifiedKFold

    is_member = np.asarray(is_member).astype(int)
    cal, test = np.flatnonzero(split == "calibration"), np.flatnonzero(split == "test")
    y = is_member[cal]
    folds = min(FOLDS, int(y.sum()), int((1 - y).sum()))
    if folds < 2:
        raise ValueError("the blind baseline needs at least 2 calibration members and 2 calibration non-members")
    scores = np.full(len(features), np.nan)
    test_sum = np.zeros(len(test))
    for train, held in StratifiedKFold(folds, shuffle=True, random_state=seed).split(features[cal], y):
        model = baseline_model(seed).fit(features[cal[train]], y[train])
        scores[cal[held]] = model.decision_function(features[cal[held]])
        test_sum += model.decision_function(features[test])
    scores[test] = test_sum / folds
    return scores


def cross_fit_halves(
    features: np.ndarray,
    labels: np.ndarray,
    half: np.ndarray,
    make_model,
    missing: str = "each half needs images of both sets to fit the blind baseline",
) -> np.ndarray:
    """Scores of a classifier (`make_model()`, a fresh one per half) fitted on one hash half and applied to the other,
    for every image: each image's score comes from a model that never saw its label (the data owner's test combines
    its attacks this way, and runs its blind baseline so). `missing`: the error when a half lacks one of the sets."""
    labels = np.asarray(labels).astype(int)
    out = np.full(len(features), np.nan)
    for fold in np.unique(half):
        fit, apply = half != fold, half == fold
        if len(np.unique(labels[fit])) < 2:
            raise ValueError(missing)
        out[apply] = make_model().fit(features[fit], labels[fit]).decision_function(features[apply])
    return out


def baseline_scores(images, manifest, seed: int = 0) -> pd.DataFrame:
    """The blind baseline's scores (the attacks' columns) for a results folder's members and non-members; its file
    keeps no `source` (file names can carry personal data) and is owner-only, as every score file."""
    entries = [(e, 1) for e in manifest.members] + [(e, 0) for e in manifest.nonmembers]
    entries = [(e, m) for e, m in entries if e.half in ("calibration", "test")]
    ids = np.array([e.index for e, _ in entries])
    split = np.array([e.half for e, _ in entries])
    is_member = np.array([m for _, m in entries])
    features = image_features(images.pixels[ids], images.max_value)
    scores = cross_fit(features, is_member, split, seed)
    return pd.DataFrame(
        {
            "sample_id": ids,
            "source": [e.source for e, _ in entries],
            "split": split,
            "is_member": is_member,
            "score": scores,
        }
    )


def shifted(baseline: dict | None) -> bool:
    """The baseline tells the two sets apart: its AUC interval lies wholly above 0.5."""
    return bool(baseline) and (baseline.get("auc_ci_lo") or 0.0) > 0.5


def beyond(baseline: dict | None) -> list[dict]:
    """The attacks whose AUC beats the baseline's on the same test images (the paired interval above 0)."""
    return [b for b in (baseline or {}).get("paired", []) if b["d_auc_lo"] > 0]


def baseline_text(baseline: dict) -> str:
    auc = f"AUC {baseline['auc']:.3f} [{baseline['auc_ci_lo']:.3f}, {baseline['auc_ci_hi']:.3f}]"
    if not shifted(baseline):
        return f"{auc}: the member and non-member images are not told apart without the model"
    if baseline.get("random_split"):
        return f"{auc}: the random split is imbalanced by chance (told apart without querying the model)"
    return f"{auc}: the member and non-member images DIFFER IN DISTRIBUTION (told apart without querying the model)"


def verdict_suffix(baseline: dict | None) -> str:
    """What the sign-off's verdict adds when the baseline separates the sets."""
    if not shifted(baseline):
        return ""
    return (
        "; random split imbalanced by chance" if baseline.get("random_split") else "; THE SETS DIFFER IN DISTRIBUTION"
    )


def shift_sentence(baseline: dict | None) -> str | None:
    """What a shifted baseline means for the verdict, in words; None when the baseline does not separate the sets."""
    if not shifted(baseline):
        return None
    auc = f"AUC {baseline['auc']:.2f}, 95% CI {baseline['auc_ci_lo']:.2f}-{baseline['auc_ci_hi']:.2f}"
    if baseline.get("random_split"):
        text = (
            f"The members and non-members were drawn at random from one dataset, yet a classifier that never queries "
            f"the model separates them ({auc}): a chance imbalance of their content at this sample size (the test is "
            "at the 2.5% level, one-sided), which attack figures near the baseline's may reflect."
        )
    else:
        text = (
            f"A classifier that never queries the model tells the member images from the non-member images ({auc}): "
            "the two sets differ in distribution (source, date, preprocessing), so attack figures at that level are "
            "not evidence of membership."
        )
    better = beyond(baseline)
    if better:
        text += " Beyond the baseline, on the same test images: " + "; ".join(
            f"{b['attack']} (AUC {b['d_auc']:+.3f}, 95% CI {b['d_auc_lo']:+.3f} to {b['d_auc_hi']:+.3f})"
            for b in better
        )
        text += "."
    else:
        text += " No attack beats the baseline significantly on the same test images."
    if not baseline.get("random_split"):
        text += " Audit members against non-members from the same source (the same crawl, date and preprocessing)."
    return text
