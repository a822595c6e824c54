"""The blind baseline's power and false-alarm rate on the embedded digits (evaluate/blind.py).

    python benchmarks/blind_baseline.py [--splits 40]

Power: 256 members against 256 non-members of scikit-learn's digits, the non-members as they are (a random split of
one dataset), JPEG-compressed at quality 90 / 75 / 50, or bilinearly rescaled to 4 x 4 and back (another source's
preprocessing). False alarms: the share of random 64 + 64 splits of the digits that the baseline flags (its AUC
interval above 0.5; the nominal level is 2.5%, one-sided). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import io
import time

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits

from diffmia.evaluate.blind import cross_fit, image_features, shifted
from diffmia.evaluate.metrics import evaluate_scores


def jpeg(a: np.ndarray, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(a[..., 0]).save(buf, format="JPEG", quality=quality)
    return np.asarray(Image.open(buf))[..., None]


def rescaled(a: np.ndarray) -> np.ndarray:
    im = Image.fromarray(a[..., 0])
    return np.asarray(im.resize((4, 4), Image.BILINEAR).resize((8, 8), Image.BILINEAR))[..., None]


def baseline(members: np.ndarray, nonmembers: np.ndarray, seed: int) -> dict:
    y = np.r_[np.ones(len(members)), np.zeros(len(nonmembers))]
    split = np.where(np.random.default_rng(seed).random(len(y)) < 0.5, "calibration", "test")
    scores = cross_fit(image_features(np.concatenate([members, nonmembers])), y, split, seed)
    m = evaluate_scores(y, scores, split, n_boot=1000, seed=seed)
    return {"auc": m["auc"], "auc_ci_lo": m["auc_ci"][0], "auc_ci_hi": m["auc_ci"][1], "tpr": m["tpr@1%fpr"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--splits", type=int, default=40, help="random 64 + 64 splits for the false-alarm rate")
    args = parser.parse_args()
    px = (load_digits().images * (255 / 16)).round().astype(np.uint8)[..., None]
    chosen = px[np.random.default_rng(0).permutation(len(px))[:512]]
    members, non = chosen[:256], chosen[256:]
    print("| non-members (256 + 256 digits) | AUC [95% CI] | TPR@1%FPR calibrated | flagged | seconds |")
    print("|---|---|---|---|---|")
    cases = {
        "as they are (random split)": non,
        "JPEG quality 90": np.stack([jpeg(a, 90) for a in non]),
        "JPEG quality 75": np.stack([jpeg(a, 75) for a in non]),
        "JPEG quality 50": np.stack([jpeg(a, 50) for a in non]),
        "rescaled to 4 x 4 and back": np.stack([rescaled(a) for a in non]),
    }
    for name, nonmembers in cases.items():
        t0 = time.perf_counter()
        m = baseline(members, nonmembers, 0)
        print(
            f"| {name} | {m['auc']:.3f} [{m['auc_ci_lo']:.3f}, {m['auc_ci_hi']:.3f}] | {m['tpr']:.1%} | "
            f"{'yes' if shifted(m) else 'no'} | {time.perf_counter() - t0:.1f} |"
        )
    flagged, aucs = 0, []
    for s in range(args.splits):
        pick = px[np.random.default_rng(100 + s).permutation(len(px))[:128]]
        m = baseline(pick[:64], pick[64:], s)
        flagged += shifted(m)
        aucs.append(m["auc"])
    print(
        f"\nRandom 64 + 64 splits: {flagged} of {args.splits} flagged ({flagged / args.splits:.1%}; nominal 2.5%), "
        f"AUC mean {np.mean(aucs):.3f}, sd {np.std(aucs):.3f}."
    )


if __name__ == "__main__":
    main()
