"""`diffmia owner`: the data owner's test. "Was my collection S used to train this model?"

The owner holds S (suspected members) and R (images of the same distribution known NOT to be in training). Both are
scored with every gray-box attack that needs no reference models. Single images are weak evidence; a set is strong:
- per attack, a one-sided Welch t-test and a permutation test of "S scores higher than R";
- combined (after CDI, arXiv 2411.12858): a logistic regression on the attacks' standardised scores, cross-fitted over
  the two hash halves of each set (fit on one half, score the other, and vice versa), so every image's combined score
  comes from a model that never saw its label; the same one-sided tests on the combined scores.
Under the null (S not used: S and R exchangeable for the model), the cross-fitted scores of S and R are exchangeable
too, so the permutation p-value is valid for the set as a whole.
Also: the effect size (Cohen's d) and the p-value against the size of S (random subsets, median p), i.e. how many
of the owner's images were needed.
The test is only as good as R: if R comes from another source (another crawl, date or preprocessing), S and R are not
exchangeable for any classifier, the model included, and a small p says nothing about training. So the same
cross-fitted test is run on a blind baseline, features of each image alone (evaluate/blind.py), that never queries
the model; when it separates S from R (permutation p < 0.05) a significant verdict is withdrawn as inconclusive.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

logger = logging.getLogger(__name__)


def one_sided_tests(s: np.ndarray, r: np.ndarray, permutations: int = 10000, seed: int = 0) -> dict:
    from scipy.stats import ttest_ind

    s, r = np.asarray(s, float), np.asarray(r, float)
    welch = ttest_ind(s, r, equal_var=False, alternative="greater")
    both = np.concatenate([s, r])
    observed = s.mean() - r.mean()
    rng = np.random.default_rng(seed)
    hits = 0
    for _ in range(permutations):
        perm = rng.permutation(both)
        hits += perm[: len(s)].mean() - perm[len(s) :].mean() >= observed
    pooled = np.sqrt(((len(s) - 1) * s.var(ddof=1) + (len(r) - 1) * r.var(ddof=1)) / max(1, len(s) + len(r) - 2))
    return {
        "welch_p": float(welch.pvalue),
        "permutation_p": float((1 + hits) / (1 + permutations)),
        "effect_size_d": float(observed / pooled) if pooled > 0 else 0.0,
        "mean_difference": float(observed),
    }


def cross_fitted(features: pd.DataFrame, is_suspect: np.ndarray, half: np.ndarray) -> np.ndarray:
    """Combined score per image from a logistic regression (standardised attack scores) fit on the other half only."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from diffmia.evaluate.blind import cross_fit_halves

    return cross_fit_halves(
        features.to_numpy(float),
        is_suspect,
        half,
        lambda: make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)),
        "each half needs suspect and reference images to fit the combination",
    )


def blind_baseline(images, ids: np.ndarray, is_suspect: np.ndarray, half: np.ndarray, permutations: int, seed: int):
    """The same one-sided tests on a model-free score: the blind baseline's classifier of image features, fitted on
    one hash half and applied to the other; `differ` when it separates suspect from reference (p < 0.05)."""
    from diffmia.evaluate.blind import baseline_model, cross_fit_halves, image_features

    features = image_features(images.pixels[ids], images.max_value)
    scores = cross_fit_halves(features, is_suspect, half, lambda: baseline_model(seed))
    tests = one_sided_tests(scores[is_suspect == 1], scores[is_suspect == 0], permutations, seed)
    return {
        **tests,
        "differ": tests["permutation_p"] < 0.05,
        "method": "image features alone (intensity, spectrum, JPEG blockiness, colour, thumbnail), a logistic "
        "regression fitted on one hash half and applied to the other; the model is never queried",
    }


def owner_verdict(p: float, blind: dict) -> str:
    """The verdict of the set-level test's permutation p, withdrawn as inconclusive when the blind baseline separates
    the collections (a significant p may then come from the difference of sources, not from training)."""
    verdict = (
        "the model was very likely trained on the suspect collection (p < 0.01)"
        if p < 0.01
        else "evidence that the suspect collection was used (p < 0.05)"
        if p < 0.05
        else "no evidence at this set size that the suspect collection was used (not proof that it was not)"
    )
    if not blind["differ"]:
        return verdict
    differ = (
        "the suspect and reference images differ in distribution: a classifier of the images alone, which never "
        f"queries the model, separates them (permutation p = {blind['permutation_p']:.3g})"
    )
    if p < 0.05:
        return (
            f"INCONCLUSIVE: {differ}, so the model-based p = {p:.3g} may come from that difference, not from "
            "training; take reference images from the same source, date and preprocessing as the suspect ones"
        )
    return f"{verdict}; note: {differ}"


def size_curve(s: np.ndarray, r: np.ndarray, sizes: list[int], repeats: int = 200, seed: int = 0) -> list[dict]:
    """Median one-sided Welch p-value over random subsets of S of each size (R whole)."""
    from scipy.stats import ttest_ind

    rng = np.random.default_rng(seed)
    rows = []
    for k in sizes:
        ps = [
            ttest_ind(rng.choice(s, k, replace=False), r, equal_var=False, alternative="greater").pvalue
            for _ in range(repeats)
        ]
        rows.append(
            {
                "set_size": int(k),
                "median_p": float(np.median(ps)),
                "share_below_0.05": float(np.mean(np.array(ps) < 0.05)),
            }
        )
    return rows


def owner_test(
    model: str | Path,
    suspect: str | Path,
    reference: str | Path,
    out: str | Path,
    seed: int = 0,
    attacks: list[str] | None = None,
    permutations: int = 10000,
    batch_size: int | None = None,
    progress: bool = True,
    allow_outside: bool = False,
) -> dict:
    from diffmia.attacks import build_attack
    from diffmia.attacks.runner import check_attack_fits, run_attack
    from diffmia.auditor import build_audit_set, list_images, plan_attacks
    from diffmia.core.config import ConfigError, TargetConfig
    from diffmia.core.environment import environment
    from diffmia.core.io import write_json
    from diffmia.core.rundir import RunDir
    from diffmia.targets.kinds import load_target
    from diffmia.targets.runs import LoadedRun

    target = load_target(model)
    images, manifest = build_audit_set(
        target.image_shape,
        list_images(suspect, "suspect", allow_outside),
        list_images(reference, "reference", allow_outside),
        None,
        seed,
        0.5,
        0.01,
        target.conditional,
    )
    planned, _ = plan_attacks(target, "gray-box", False, False)
    if attacks:
        unknown = sorted(set(attacks) - {n for n, _ in planned})
        if unknown:
            raise ConfigError(
                f"--attack: {', '.join(unknown)} cannot run here (gray-box, no reference models, no public data)"
            )
        planned = [(n, p) for n, p in planned if n in attacks]
    out = Path(out)
    cfg = TargetConfig.model_validate({"name": "owner", "seed": seed, "data": {"resolution": target.image_shape[-1]}})
    loaded = LoadedRun(RunDir(out / "model"), cfg, manifest, images, target)
    built = [build_attack(n, p, seed=seed) for n, p in planned]
    for atk in built:
        check_attack_fits(loaded, atk)
    out.mkdir(parents=True, exist_ok=True)
    manifest.save(loaded.run.manifest)
    frames = {}
    for atk in built:
        logger.info(f"[owner] scoring with {atk.name}")
        frames[atk.name] = run_attack(loaded, atk, loaded.run.scores, batch_size=batch_size, progress=progress).scores
    first = next(iter(frames.values()))
    features = pd.DataFrame({name: df.set_index("sample_id").score for name, df in frames.items()}).loc[first.sample_id]
    is_suspect = first.is_member.to_numpy(int)
    half = first.split.to_numpy()
    per_attack = {
        name: one_sided_tests(features[name][is_suspect == 1], features[name][is_suspect == 0], permutations, seed)
        for name in features
    }
    combined = cross_fitted(features, is_suspect, half)
    result = one_sided_tests(combined[is_suspect == 1], combined[is_suspect == 0], permutations, seed)
    blind = blind_baseline(images, first.sample_id.to_numpy(), is_suspect, half, permutations, seed)
    n_s = int(is_suspect.sum())
    sizes = sorted({k for k in (2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000) if k <= n_s} | {n_s})
    curve = size_curve(combined[is_suspect == 1], combined[is_suspect == 0], sizes, seed=seed)
    needed = next((row["set_size"] for row in curve if row["median_p"] < 0.05), None)
    verdict = owner_verdict(result["permutation_p"], blind)
    report = {
        "model": str(Path(model).resolve()),
        "suspect": str(suspect),
        "reference": str(reference),
        "suspect_images": n_s,
        "reference_images": int((is_suspect == 0).sum()),
        "attacks": list(frames),
        "combined": result,
        "per_attack": per_attack,
        "blind_baseline": blind,
        "size_curve": curve,
        "images_needed_median_p_0.05": needed,
        "verdict": verdict,
        "environment": environment(),
        "method": "one-sided Welch t-test and permutation test of suspect > reference on cross-fitted logistic "
        "combinations of the attacks' scores (fit on one hash half, applied to the other)",
    }
    write_json(out / "owner.json", report)
    _plot(curve, out / "owner-size-curve.png")
    return report


def _plot(curve: list[dict], path: Path) -> Path:
    from diffmia.evaluate.plots import plt, save_figure

    fig, ax = plt.subplots(figsize=(6, 4), constrained_layout=True)
    ax.plot([c["set_size"] for c in curve], [max(c["median_p"], 1e-300) for c in curve], marker="o")
    ax.axhline(0.05, ls="--", color="grey", lw=0.8, label="p = 0.05")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("suspect images used (random subsets)")
    ax.set_ylabel("median one-sided p-value")
    ax.set_title("Data owner's test: evidence vs collection size")
    ax.legend()
    return save_figure(fig, path)
