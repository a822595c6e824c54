"""The audit report: report.html (self-contained, plots embedded) and report.md, from results.json and the stored
per-sample scores. Written for a GDPR/CCPA risk assessment: what was audited, the measured leakage per recipe in plain
words, the full table, the plots, and what the numbers do not show. Member images are embedded only when asked."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import numpy as np
import pandas as pd

from diffmia import __version__
from diffmia.core.environment import describe
from diffmia.core.io import write_text
from diffmia.evaluate.metrics import MIN_FALSE_POSITIVES, fpr_key

from .advice import checklist, defenses_offered, fid_text, not_tested, seeds_of, what_to_change
from .blind import baseline_text, shift_sentence, shifted, verdict_suffix
from .document import (  # noqa: F401 - md_escape re-exported
    Bullets,
    Code,
    Document,
    Heading,
    Image,
    Risk,
    Table,
    md_escape,
    para,
    to_html,
    to_markdown,
)
from .exposure import ShownMembers
from .folder import RECIPE_NAME, ReportError, check_results, resolve_inside  # noqa: F401 - re-exported
from .groups import group_lines
from .plain import DPIA_FRAMING, GLOSSARY, measurable, plain_sentence
from .plots import histogram_plot, privacy_utility_plot, roc_plot
from .verdict import STRONGEST_RULE, risk_level, separates, strongest  # noqa: F401 - the report's rules

ACCESS = {
    "white-box": "needs the model's weights (it reads gradients)",
    "gray-box": "needs the model's noise predictions, i.e. the weights or an API that exposes them",
    "black-box": "needs only images the model generates",
}


# Cells wrap between words only (a word longer than its column breaks, nothing else), and a table wider than the
# page scrolls in its own box instead of squeezing its columns into broken words.
CSS = (
    "body{font-family:system-ui,sans-serif;max-width:1150px;margin:2em auto;color:#222;line-height:1.45}"
    ".scroll{overflow-x:auto;margin:1em 0}table{border-collapse:collapse;font-size:12px;width:100%}"
    "td,th{border:1px solid #ccc;padding:4px 7px;text-align:left;vertical-align:top;overflow-wrap:break-word;"
    "word-break:normal;hyphens:none}th{background:#f2f2f2}table.kv th{width:16em}"
    "img{max-width:100%;margin:.5em 0;border:1px solid #eee}"
    ".risk{padding:.6em 1em;margin:.6em 0;border-left:5px solid #999;background:#fafafa}"
    ".HIGH{border-color:#c0392b}.MODERATE{border-color:#e67e22}.LOW{border-color:#27ae60}"
    "td.thin{color:#aaa}"
    ".badge{display:inline-block;padding:.05em .6em;border-radius:.3em;color:#fff;font-weight:600;"
    "white-space:nowrap;background:#777}.badge.HIGH{background:#c0392b}.badge.MODERATE{background:#d35400}"
    ".badge.LOW{background:#1e8449}"
)


def risk_summary(recipe: str, rows: list[dict], info: dict, delta: float) -> str:
    top = strongest(rows)
    level = risk_level(top)
    u = info.get("utility")
    utility = f" Utility: {u['fid_label']} {u['fid']:.2f} (real-vs-real floor {u['fid_floor']:.2f})." if u else ""
    counts = info["counts"]
    fpr_ci = (
        f" (95% CI {top['fpr@1%fpr_achieved_ci_lo']:.1%}-{top['fpr@1%fpr_achieved_ci_hi']:.1%})"
        if top.get("fpr@1%fpr_achieved_ci_lo") is not None
        else ""
    )
    found = (
        f"identified {top['tpr@1%fpr']:.1%} of training images (95% CI {top['tpr@1%fpr_ci_lo']:.1%}-"
        f"{top['tpr@1%fpr_ci_hi']:.1%}) while wrongly flagging {top['fpr@1%fpr_achieved']:.1%} of held-out images"
        f"{fpr_ci}, with a threshold fixed beforehand on separate calibration data"
        if measurable(top, 0.01)
        else f"was scored, but its rate at 1% FPR is not measurable with {top['n_test_nonmembers']} test non-members"
    )
    heuristic = max(rows, key=lambda r: r["epsilon_lower_bound"])
    text = (
        f"{recipe}: {level} measured leakage. The strongest attack, {top['attack']} ({top['access']}: "
        f"{ACCESS.get(top['access'], top['access'])}; {_queries_phrase(top)} per image), {found}. "
        f"AUC {top['auc']:.3f} (95% CI {top['auc_ci_lo']:.3f}-{top['auc_ci_hi']:.3f}). "
        f"{_epsilon_sentence(heuristic['epsilon_lower_bound'], delta, rows, info.get('one_run_headline'), heuristic['attack'])}"
        f"{utility} {_counts_sentence(top, counts)}"
    )
    if top.get("defenses", "none") != "none":
        text += f" Defenses in this recipe: {top['defenses']}."
    dp = top.get("dp_epsilon")
    if dp is not None and dp == dp:
        text += (
            f" Its DP-SGD accountant guarantees epsilon <= {dp:.2f} (an upper bound); the audit's lower bound "
            f"above must not exceed it."
        )
    if top.get("dup_auc") is not None:
        text += (
            f" On the {top['dup_members']} members that were duplicated in the training data, AUC "
            f"{top['dup_auc']:.3f} and TPR {top['dup_tpr@1%fpr']:.1%} at the calibrated 1% FPR threshold."
        )
    text += _set_level_sentence(info.get("set_level"))
    shift = shift_sentence(info.get("blind_baseline"))
    if shift:
        text += " " + shift
    if level.startswith("LOW"):
        text += " No leakage was detected by these attacks at this sample size; that is not evidence of privacy."
    return text


def _counts_sentence(top: dict, counts: dict) -> str:
    total = f"{counts['members']} members and {counts['nonmembers']} non-members"
    if top.get("n_test_members") is None:
        return f"Audited on {total}."
    return (
        f"Rates and AUC from the test halves: {top['n_test_members']} members and {top['n_test_nonmembers']} "
        f"non-members (thresholds fitted on the other {top['n_calibration_members']} + "
        f"{top['n_calibration_nonmembers']}; {total} in all)."
    )


def _generations(r: dict) -> int:
    """Generated images per audited image; 0 where the row has none recorded (missing or NaN from a CSV)."""
    gens = r.get("generations_per_sample")
    return 0 if gens is None or gens != gens else int(gens)


def _queries_phrase(r: dict) -> str:
    gens = _generations(r)
    return f"{int(r['queries_per_sample'])} model queries" + (f" ({gens} generated images)" if gens else "")


def _set_level_sentence(curves: dict | None) -> str:
    """The best set-level AUC at the largest set size: whether a collection (one owner's images) was used."""
    if not curves:
        return ""
    largest = max(row["set_size"] for rows in curves.values() for row in rows)
    best_attack, best = max(
        ((a, row) for a, rows in curves.items() for row in rows if row["set_size"] == largest),
        key=lambda item: item[1]["auc"],
    )
    single = max((row["auc"] for rows in curves.values() for row in rows if row["set_size"] == 1), default=None)
    text = (
        f" Set level: pooled over sets of {largest} images, {best_attack} separates member sets from non-member "
        f"sets with AUC {best['auc']:.3f}"
    )
    if single is not None:
        text += f" (best single-image AUC {single:.3f})"
    if best["auc"] >= 0.9:
        text += ": whether a collection of images, such as one data owner's, was used is detectable"
    return text + "."


def _per_attack_one_run(rows: list[dict] | None) -> list[dict]:
    return [
        r for r in rows or [] if r.get("epsilon_one_run") is not None and r["epsilon_one_run"] == r["epsilon_one_run"]
    ]


def headline_epsilon_text(headline: dict | None) -> str:
    """The headline one-run epsilon for the sign-off: '1.20 at 95% (pre-registered split: lira chosen among 13
    attacks on 100 canaries, epsilon on the other 100 of 200)', or 'not audited'."""
    if not headline:
        return "not audited"
    total = headline["canaries"] + headline["selection_canaries"]
    return (
        f"{headline['epsilon']:.2f} at {1 - headline['level']:.0%} (pre-registered split: {headline['attack']} "
        f"chosen among {headline['attacks']} attacks on {headline['selection_canaries']} canaries, epsilon on the "
        f"other {headline['canaries']} of {total})"
    )


def _epsilon_sentence(
    eps: float, delta: float, rows: list[dict] | None = None, headline: dict | None = None, attack: str | None = None
) -> str:
    """The headline epsilon: where the recipe has canaries, the one-run audit's bound for the recipe as a whole (attack
    and guess counts chosen on one half of the canaries, epsilon on the other: valid at 95% over all attacks);
    otherwise the single-threshold figure, labelled as the heuristic it is."""
    audited = _per_attack_one_run(rows)
    if headline:
        procedure = (
            f"attack and guess counts chosen among {headline['attacks']} attacks on a random half of the "
            f"canaries ({headline['selection_canaries']}), epsilon computed on the other "
            f"{headline['canaries']} alone, one test at {1 - headline['level']:.0%} confidence for the recipe "
            f"as a whole"
        )
        if headline["epsilon"] <= 0:
            return (
                f"One-run audit (Steinke et al., pre-registered split: {procedure}): no epsilon above 0 could be "
                f"shown at delta={delta:g} ({headline['attack']}: {headline['correct']}/{headline['guesses']} "
                f"guesses right)."
            )
        return (
            f"One-run audit (Steinke et al., pre-registered split: {procedure}): epsilon >= "
            f"{headline['epsilon']:.2f} at delta={delta:g} from {headline['attack']} ({headline['correct']}/"
            f"{headline['guesses']} guesses right): any differential-privacy guarantee claimed for this recipe must "
            f"be at least this weak. The per-attack figures of the table are each valid for that attack alone."
        )
    if audited:  # results written before the headline procedure: per-attack figures only, never their maximum
        return (
            f"One-run audit: per-attack bounds only ({len(audited)} attacks, each valid at 95% for that attack "
            f"alone; their maximum is not a valid figure). Rerun `diffmia report` for the recipe's headline."
        )
    if eps <= 0:
        return (
            f"The single-threshold epsilon heuristic (not a valid bound for one model) is 0 at delta={delta:g}; "
            f"no canaries were audited."
        )
    return (
        f"Single-threshold epsilon heuristic (Jagielski et al.; it assumes repeated independent trials, which one "
        f"model does not give, so it is not a valid bound): {eps:.2f} at delta={delta:g}, the largest over the "
        f"{len(rows or [])} attacks of this recipe"
        + (f" (from {attack}, which need not be the strongest attack)" if attack else "")
        + ". Add canaries (data.canaries) for the one-run audit's valid bound."
    )


CAVEATS = [
    "Strongest attack: "
    + STRONGEST_RULE
    + ". Headline epsilon: the one-run audit of a pre-registered split (the attack "
    "and its guess counts chosen on a random half of the canaries, epsilon computed on the other half alone: one test, "
    "valid at 95% for the recipe whatever the number of attacks); the table's one-run column is per attack, each valid "
    "for that attack alone. Without canaries, the largest single-threshold heuristic, labelled as such.",
    "ASR (attack success rate): balanced accuracy, (TPR + TNR) / 2, on the test halves at the threshold that maximises "
    "it on the calibration halves; 0.5 is chance.",
    "Attacker's assumptions: every number uses labelled calibration data (members and non-members of the same "
    "distribution) to fix its threshold. Gray-box attacks need the model's noise predictions (weights or a "
    "noise-prediction API); black-box attacks only generated images; white-box ones gradients; reference-model attacks "
    "also retrain the recipe.",
    "Risk levels are a heuristic of this report: HIGH when, at the calibrated 1%-FPR threshold, the attack flags "
    "members significantly more often than non-members with at least 5% of members found (lower 95% bound), or the AUC's "
    "lower bound is at least 0.75; MODERATE when either difference is merely significant (or the AUC's lower bound "
    "exceeds 0.55); otherwise LOW / NOT DETECTED.",
    "These attacks give lower bounds on leakage: a stronger attack could find more. A low number is not a guarantee.",
    "Rates at a fixed FPR are resolved only to 1/(number of test non-members): TPR at 0.1% FPR needs at least 1000 "
    "test non-members to mean anything, and is printed as 'not measurable' below that, never as a number.",
    "Calibrated numbers use a threshold fitted on the calibration halves and applied to the disjoint test halves; "
    "'oracle' numbers pick the best threshold on the test halves themselves, as many papers do, and overstate what an "
    "attacker who must commit to a threshold achieves. Use the calibrated ones.",
    "Set-level AUC (where computed) scores a set of L test images by its mean score and compares member sets with "
    "non-member sets; it answers 'was this collection used?', a question that stays answerable long after single "
    "images stop being identifiable.",
    "Averages hide individuals: duplicated or unusual training images can leak far more than the typical member.",
    "The empirical epsilon is a statistical lower bound from one audit, not a DP guarantee; DP-trained recipes report "
    "their accountant epsilon, an upper bound, separately.",
    "FID here uses the feature network named in the table; it is comparable across recipes of this report, not with "
    "published Inception FIDs.",
]


def _pct(v) -> str:
    return "" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:.1%}"


def queries_text(r: dict) -> str:
    """Denoiser calls per image, and for black-box attacks the generated images among them: '320 (16 images)'."""
    gens = _generations(r)
    return f"{int(r['queries_per_sample'])}" + (f" ({gens} images)" if gens else "")


def blind_row(recipe: str, info: dict, rows: list[dict]) -> dict | None:
    """The blind baseline as a row of the results table (no model query, no generated image)."""
    b = info.get("blind_baseline")
    if not b:
        return None
    return {
        **b,
        "recipe": recipe,
        "attack": "blind baseline (no model)",
        "access": "none: images only",
        "queries_per_sample": 0,
        "generations_per_sample": 0,
        "defenses": rows[0].get("defenses", "none") if rows else "none",
        "dp_epsilon": None,
        "epsilon_lower_bound": None,  # a privacy bound of no model
        "epsilon_one_run": None,
        "fid": None,
    }


def with_baselines(results: dict, by_recipe: dict[str, list[dict]]) -> list[dict]:
    """The table's rows: each recipe's attacks, then its blind baseline."""
    out = []
    for recipe, rows in by_recipe.items():
        out += rows
        b = blind_row(recipe, results["recipes"][recipe], rows)
        if b:
            out.append(b)
    return out


def results_table(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    header = [
        "recipe",
        "defenses",
        "DP epsilon (accountant)",
        "attack",
        "access",
        "queries (generated images)",
        "AUC [95% CI]",
        "TPR@1%FPR calibrated [95% CI]",
        "achieved FPR (test FPs)",
        "TPR@0.1%FPR calibrated [95% CI]",
        "achieved FPR (test FPs)",
        "ASR",
        "TPR@1%FPR oracle",
        "epsilon (single-threshold heuristic)",
        "epsilon one-run, per attack (canaries)",
        "FID (floor)",
    ]
    body, thin = [], []
    for r in rows:
        fid = "" if r.get("fid") is None else f"{r['fid']:.2f} ({r['fid_floor']:.2f})"
        dp = r.get("dp_epsilon")
        body.append(
            [
                r["recipe"],
                r.get("defenses", "none"),
                "" if dp is None or dp != dp else f"{dp:.2f}",
                r["attack"],
                r["access"],
                queries_text(r),
                f"{r['auc']:.3f} [{r['auc_ci_lo']:.3f}, {r['auc_ci_hi']:.3f}]",
                _rate_cell(r, 0.01),
                _achieved(r, 0.01),
                _rate_cell(r, 0.001),
                _achieved(r, 0.001),
                f"{r['asr']:.3f}",
                _pct(r["tpr@1%fpr_oracle"]) if measurable(r, 0.01) else "not measurable",
                "" if r.get("epsilon_lower_bound") is None else f"{r['epsilon_lower_bound']:.2f}",
                ""
                if r.get("epsilon_one_run") is None or r["epsilon_one_run"] != r["epsilon_one_run"]
                else f"{r['epsilon_one_run']:.2f} ({r.get('one_run_guesses')})",
                fid,
            ]
        )
        thin.append(
            {
                7: _thin(r, 0.01),
                8: _thin(r, 0.01),
                9: _thin(r, 0.001),
                10: _thin(r, 0.001),
            }
        )
    return header, body, thin


def not_measurable(r: dict, fpr: float) -> str:
    needed = int(round(1 / fpr))
    return f"not measurable (needs >= {needed} test non-members; {int(r['n_test_nonmembers'])} here)"


def _rate_cell(r: dict, fpr: float) -> str:
    """'TPR [lo, hi]' at a calibrated FPR, or 'not measurable' where the test split cannot resolve that FPR (fewer
    than 1/FPR test non-members: one false positive is already above it), never a number then."""
    key = fpr_key(fpr)
    if not measurable(r, fpr):
        return not_measurable(r, fpr)
    if r.get(f"tpr@{key}") is None:
        return ""
    return f"{_pct(r.get(f'tpr@{key}'))} [{_pct(r.get(f'tpr@{key}_ci_lo'))}, {_pct(r.get(f'tpr@{key}_ci_hi'))}]"


def _thin(r: dict, fpr: float) -> bool:
    """The calibrated rate rests on fewer than MIN_FALSE_POSITIVES calibration false positives (or none was asked);
    never for a rate shown as not measurable."""
    if not measurable(r, fpr):
        return False
    fp = r.get(f"fp@{fpr_key(fpr)}_calibration")
    return fp is None or fp != fp or fp < MIN_FALSE_POSITIVES


def _achieved(r: dict, fpr: float) -> str:
    if not measurable(r, fpr):
        return "-"
    key = fpr_key(fpr)
    value, fp = r.get(f"fpr@{key}_achieved"), r.get(f"fp@{key}")
    if value is None or value != value:
        return ""
    return _pct(value) + ("" if fp is None or fp != fp else f" ({int(fp)})")


def achieved_text(r: dict, fpr: float) -> str:
    """'1.6% [0.2%, 5.5%] (2 of 128 test non-members)': the achieved FPR of a calibrated threshold with its interval."""
    key = fpr_key(fpr)
    return (
        f"{_pct(r[f'fpr@{key}_achieved'])} [{_pct(r[f'fpr@{key}_achieved_ci_lo'])}, "
        f"{_pct(r[f'fpr@{key}_achieved_ci_hi'])}] ({int(r[f'fp@{key}'])} of {int(r['n_test_nonmembers'])} test "
        f"non-members)"
    )


def threshold_text(r: dict, fpr: float) -> str:
    """How many calibration false positives fixed the threshold, flagged where they are too few."""
    fp = r.get(f"fp@{fpr_key(fpr)}_calibration")
    if fp is None or fp != fp:
        return "unknown"
    fp = int(fp)
    text = f"set by {fp} calibration false positive{'s' if fp != 1 else ''} of {int(r['n_calibration_nonmembers'])}"
    if fp < MIN_FALSE_POSITIVES:
        text += f": THIN (fewer than {MIN_FALSE_POSITIVES}: a few images fix the threshold and the rate)"
    return text


def make_plots(out: Path, results: dict) -> dict[str, list[Path]]:
    plots: dict[str, list[Path]] = {"privacy_utility": [], "recipes": []}
    rows = results["rows"]
    by_recipe: dict[str, list[dict]] = {}
    for r in rows:
        by_recipe.setdefault(r["recipe"], []).append(r)
    utility_points = []
    for recipe, recipe_rows in by_recipe.items():
        curves = {}
        for r in recipe_rows:
            df = pd.read_csv(out / r["scores"])
            test = df[df.split == "test"]
            curves[r["attack"]] = (test.is_member.to_numpy(bool), test.score.to_numpy(float))
        top = strongest(recipe_rows)
        points = {r["attack"]: operating_points(r) for r in recipe_rows}
        blind = (results["recipes"][recipe].get("blind_baseline") or {}).get("scores")
        baseline = None
        if blind and (out / blind).is_file():
            test = pd.read_csv(resolve_inside(out, blind)).query("split == 'test'")
            baseline = (test.is_member.to_numpy(bool), test.score.to_numpy(float))
        plots["recipes"].append(
            roc_plot(recipe, curves, out / "plots" / f"roc-{recipe}.png", points, top["attack"], baseline)
        )
        plots["recipes"].append(histogram_plot(recipe, curves, out / "plots" / f"hist-{recipe}.png"))
        if top.get("fid") is not None:
            utility_points.append(
                {
                    "recipe": recipe,
                    "fid": top["fid"],
                    "tpr": top["tpr@1%fpr"],
                    "tpr_lo": top["tpr@1%fpr_ci_lo"],
                    "tpr_hi": top["tpr@1%fpr_ci_hi"],
                    "auc": top["auc"],
                    "auc_lo": top["auc_ci_lo"],
                    "auc_hi": top["auc_ci_hi"],
                    "attack": top["attack"],
                }
            )
    from .setlevel import set_level_plot

    for recipe, info in results["recipes"].items():
        if info.get("set_level"):
            plots["recipes"].append(
                set_level_plot(
                    info["set_level"], out / "plots" / f"set-level-{recipe}.png", f"{recipe}: set-level inference"
                )
            )
    if len(utility_points) >= 2:  # one recipe: nothing to trade off, no near-empty frame
        label = next(r["fid_label"] for r in rows if r.get("fid_label"))
        plots["privacy_utility"].append(
            privacy_utility_plot(utility_points, label, out / "plots" / "privacy-utility.png")
        )
    return plots


def operating_points(r: dict) -> list[dict]:
    """The calibrated operating points of a row, at each FPR target the test split can resolve: achieved FPR and
    TPR with their 95% intervals."""
    marks = []
    for target in (0.01, 0.001):
        key = fpr_key(target)
        if not measurable(r, target) or r.get(f"tpr@{key}") is None or r.get(f"fpr@{key}_achieved_ci_lo") is None:
            continue
        marks.append(
            {
                "target": target,
                "fpr": r[f"fpr@{key}_achieved"],
                "fpr_lo": r[f"fpr@{key}_achieved_ci_lo"],
                "fpr_hi": r[f"fpr@{key}_achieved_ci_hi"],
                "tpr": r[f"tpr@{key}"],
                "tpr_lo": r[f"tpr@{key}_ci_lo"],
                "tpr_hi": r[f"tpr@{key}_ci_hi"],
            }
        )
    return marks


def crossing_lines(by_recipe: dict[str, list[dict]]) -> list[str]:
    """Why a calibrated rate can sit above the oracle curve: one line per recipe whose strongest attack shows it."""
    lines = []
    for recipe, rows in by_recipe.items():
        top = strongest(rows)
        if not measurable(top, 0.01) or top["tpr@1%fpr"] <= top["tpr@1%fpr_oracle"]:
            continue
        n = int(top["n_test_nonmembers"])
        lines.append(
            f"{recipe}: {top['attack']}'s calibrated rate ({top['tpr@1%fpr']:.1%}) is above its oracle rate at 1% FPR "
            f"({top['tpr@1%fpr_oracle']:.1%}) because its threshold, fixed on the calibration halves, landed at an "
            f"achieved FPR of {top['fpr@1%fpr_achieved']:.1%} on the test non-members, while the oracle is read at "
            f"1% exactly; with {n} test non-members each one moves the FPR by {1 / n:.1%}. Its marker sits on the "
            f"curve, further right."
        )
    return lines


def trainings_text(results: dict, recipe: str, by_recipe: dict[str, list[dict]]) -> str:
    """The sign-off's trainings line: one model (and what that leaves out), or the spread over several seeds."""
    names = [n for n in seeds_of(results, recipe) if n in by_recipe]
    seed = (results["recipes"][recipe].get("config") or {}).get("seed")
    if len(names) < 2:
        return (
            "one model trained"
            + (f" (seed {seed})" if seed is not None else "")
            + ": the intervals cover the choice of test images, not retraining, which can move a calibrated rate by "
            "more than they suggest (docs/reproducibility.md); `seeds: N` in the benchmark trains the recipe N times "
            "and reports the spread"
        )
    tops = [strongest(by_recipe[n]) for n in names]
    tprs = [t["tpr@1%fpr"] for t in tops]
    aucs = [t["auc"] for t in tops]
    seeds = [(results["recipes"][n].get("config") or {}).get("seed") for n in names]
    return (
        f"{len(names)} trainings (seeds {', '.join(map(str, seeds))}): strongest attack's TPR@1%FPR from "
        f"{min(tprs):.1%} to {max(tprs):.1%}, AUC from {min(aucs):.3f} to {max(aucs):.3f}; verdicts "
        + ", ".join(risk_level(t) for t in tops)
        + " (see Spread across trainings)"
    )


def spread_rows(results: dict, by_recipe: dict[str, list[dict]]) -> tuple[list[str], list[list[str]]]:
    """Per recipe trained several times and attack: the mean, minimum and maximum over the trainings."""
    header = [
        "recipe",
        "attack",
        "trainings",
        "AUC mean [min, max]",
        "TPR@1%FPR calibrated mean [min, max]",
        "verdicts",
    ]
    body = []
    for recipe in by_recipe:
        if results["recipes"][recipe].get("seed_of"):
            continue
        names = [n for n in seeds_of(results, recipe) if n in by_recipe]
        if len(names) < 2:
            continue
        for attack in [r["attack"] for r in by_recipe[recipe]]:
            rows = [r for n in names for r in by_recipe[n] if r["attack"] == attack]
            aucs = np.array([r["auc"] for r in rows])
            tprs = np.array([r["tpr@1%fpr"] for r in rows])
            body.append(
                [
                    recipe,
                    attack,
                    str(len(rows)),
                    f"{aucs.mean():.3f} [{aucs.min():.3f}, {aucs.max():.3f}]",
                    f"{tprs.mean():.1%} [{tprs.min():.1%}, {tprs.max():.1%}]",
                    ", ".join(risk_level(r).split()[0] for r in rows),
                ]
            )
    return header, body


def signoff(results: dict, recipe: str, by_recipe: dict[str, list[dict]]) -> list[tuple[str, str]]:
    """A recipe's sign-off: label / value pairs a reviewer signs, the verdict first (a badge in the page)."""
    rows = by_recipe[recipe]
    info = results["recipes"][recipe]
    top = strongest(rows)
    headline = info.get("one_run_headline")
    dp = top.get("dp_epsilon")
    heuristic = max(rows, key=lambda r: r["epsilon_lower_bound"])
    baseline = info.get("blind_baseline")
    level = risk_level(top)
    pairs = [("verdict", level + verdict_suffix(baseline))]
    if baseline:
        pairs.append(("blind baseline (images only, no model query)", baseline_text(baseline)))
    if shifted(baseline):
        pairs.append(("what the shift means", shift_sentence(baseline)))
    pairs += [
        (
            "audited",
            f"{info['counts']['members']} members / {info['counts']['nonmembers']} non-members, manifest "
            f"{info['manifest_sha256'][:12]}",
        ),
        ("access levels tested", ", ".join(sorted({r["access"] for r in rows}))),
        ("strongest attack", f"{top['attack']} ({top['access']}; {STRONGEST_SHORT})"),
        ("TPR@1%FPR calibrated [95% CI]", _rate_cell(top, 0.01)),
    ]
    if measurable(top, 0.01):
        pairs += [
            ("achieved FPR at that threshold [95% CI]", achieved_text(top, 0.01)),
            ("threshold", threshold_text(top, 0.01)),
        ]
    pairs += [
        ("TPR@0.1%FPR calibrated [95% CI]", _rate_cell(top, 0.001)),
        ("AUC [95% CI]", f"{top['auc']:.3f} [{top['auc_ci_lo']:.3f}, {top['auc_ci_hi']:.3f}]"),
        ("test set", f"{top['n_test_members']} members, {top['n_test_nonmembers']} non-members"),
        ("trainings", trainings_text(results, recipe, by_recipe)),
        ("epsilon, DP accountant (upper bound)", "no DP" if dp is None or dp != dp else f"{dp:.2f}"),
        ("epsilon, one-run audit (lower bound)", headline_epsilon_text(headline)),
    ]
    if not headline:
        pairs.append(
            (
                "epsilon, single-threshold heuristic (not a bound)",
                f"{heuristic['epsilon_lower_bound']:.2f} (from {heuristic['attack']})",
            )
        )
    grouped = (results.get("groups") or {}).get(recipe)
    if grouped:
        flagged = [r["group"] for r in grouped["rows"] if r["more_exposed"]]
        pairs.append(
            (
                "groups more exposed than the rest",
                (", ".join(flagged) if flagged else "none significantly")
                + f" (of {len(grouped['rows'])} groups by {grouped['spec']}; see Who is exposed)",
            )
        )
    pairs += [
        ("utility", fid_text(info.get("utility"))),
        ("not tested", "; ".join(not_tested(results, recipe, rows)) or "-"),
    ]
    return pairs


STRONGEST_SHORT = "the largest lower bound of TPR minus FPR at its calibrated 1%-FPR threshold"


def group_table(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    header = [
        "group",
        "test members",
        "flagged (TPR) [95% CI]",
        "test non-members",
        "flagged (FPR)",
        "median exposure (-log10 p)",
        "Holm p",
        "more exposed",
    ]
    body = [
        [
            str(r["group"]),
            str(r["test_members"]),
            f"{_pct(r['tpr'])} [{_pct(r['tpr_ci_lo'])}, {_pct(r['tpr_ci_hi'])}]" if r["test_members"] else "-",
            str(r["test_nonmembers"]),
            _pct(r["fpr"]) if r["test_nonmembers"] else "-",
            f"{r['median_exposure']:.2f}" if r["median_exposure"] == r["median_exposure"] else "-",
            f"{r['p_holm']:.2g}",
            ("yes, as a group" if r["flagged_as_a_group"] else "yes") if r["more_exposed"] else "no",
        ]
        for r in rows
    ]
    return header, body


def _exposure_lines(results: dict, shown: ShownMembers | None = None) -> list[str]:
    lines = []
    for recipe, top in (results.get("exposure") or {}).items():
        names = shown.names.get(recipe, {}) if shown else {}
        for r in top:
            flagged = r.get("flagged_at_1%fpr_by") or ""
            name = f"{names[int(r['sample_id'])]}, " if int(r["sample_id"]) in names else ""
            count = r.get("flagged_count")
            count = len(flagged.split(";")) if count is None and flagged == flagged and flagged else (count or 0)
            lines.append(
                f"{recipe}: sample {r['sample_id']} ({name}{r['half']} half): p = {r['p_value']:.4f}; flagged at 1% FPR "
                + (
                    f"by {int(count)} attacks: {flagged.replace(';', ', ')}"
                    if flagged == flagged and flagged
                    else "by none"
                )
            )
    return lines


def ties_lines(results: dict) -> list[str]:
    """How many members share the p-value floor: the 'most exposed' list is a tie-break among them."""
    lines = []
    for recipe, t in (results.get("exposure_ties") or {}).items():
        if t["at_floor"] < 2:
            continue
        lines.append(
            f"{recipe}: {t['at_floor']} of {t['members']} members share the smallest p-value "
            f"{t['calibration_nonmembers']} calibration non-members allow (1/{t['calibration_nonmembers'] + 1} = "
            f"{t['floor']:.4f}): among them the list is ordered by the number of attacks whose calibrated 1%-FPR "
            f"threshold flags the image, then by score; it is not a ranking of certainty."
        )
    return lines


def _comparison(out: Path, results: dict) -> list[str]:
    """Every recipe against the first one (the baseline by convention: list the undefended recipe first)."""
    from .compare import compare_recipes, comparison_lines

    names = list(dict.fromkeys(r["recipe"] for r in results["rows"]))
    if len(names) < 2:
        return []
    try:
        return comparison_lines(compare_recipes(out, results, names[0], n_boot=1000))
    except ValueError as exc:  # audited on different images
        return [f"not paired: {exc}"]


def _factor_lines(results: dict) -> list[str]:
    return [
        f"{recipe}: {f['property']}: Spearman {f['spearman']:+.2f} (p {f['p_value']:.2g}, {f['images']} members)"
        for recipe, factors in (results.get("exposure_factors") or {}).items()
        for f in factors
    ]


def _skipped_lines(results: dict) -> list[str]:
    return [
        f"{recipe}: {name}: {why}"
        for recipe, info in results["recipes"].items()
        for name, why in (info.get("skipped_attacks") or {}).items()
    ]


THIN_NOTE = (
    f"Greyed out (marked 'thin' in Markdown): calibrated rates whose threshold rests on fewer than "
    f"{MIN_FALSE_POSITIVES} calibration false positives: with n calibration non-members a target FPR f leaves "
    f"floor(f*n) of them above the threshold (0.1% of 1000 is 1), so the threshold, and the rate, are set by "
    f"one or a few images. Achieved FPR: measured on the test non-members, with their false-positive count."
)


def write_report(out: str | Path, results: dict, shown: ShownMembers | None = None) -> Path:
    """report.html and report.md of a results folder.

    Args:
        out: The results folder.
        results: Its results.json.
        shown: Member images and file names to show (--show-examples: `evaluate.exposure.show_members`); None
            shows none, and removes example grids an earlier report left.

    Returns:
        The path of report.html.

    Raises:
        ReportError: results.json names a path outside the folder, or a recipe name that is not one.
    """
    out = Path(out)
    check_results(out, results)  # a crafted results.json writes and reads nothing outside the folder
    plots = make_plots(out, results)
    rows = results["rows"]
    delta = results["evaluation"]["delta"]
    by_recipe: dict[str, list[dict]] = {}
    for r in rows:
        by_recipe.setdefault(r["recipe"], []).append(r)
    summaries = {
        recipe: risk_summary(recipe, rr, results["recipes"][recipe], delta) for recipe, rr in by_recipe.items()
    }
    examples = shown.grids if shown else {}
    if shown is None:  # a rebuild without --show-examples leaves no member image behind
        for stale in (out / "plots").glob("examples-*.png"):
            stale.unlink()
    header, body, thin = results_table(with_baselines(results, by_recipe))
    bases = [recipe for recipe in by_recipe if not results["recipes"][recipe].get("seed_of")]
    levels = {recipe: risk_level(strongest(rr)) for recipe, rr in by_recipe.items()}
    env = results.get("environment")
    when = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")

    audited = []
    for recipe, info in results["recipes"].items():
        if info.get("external"):  # diffmia audit: a model trained elsewhere
            audited.append(
                {
                    "recipe": recipe,
                    "data": f"members {info['members_from']}, non-members {info['nonmembers_from']}"
                    + (f", public {info['public_from']}" if info.get("public_from") else ""),
                    "split": f"{info['counts']['members']} members / {info['counts']['nonmembers']} non-members "
                    f"(halves by a seeded pixel hash, calibration fraction {info['calibration_fraction']}) / "
                    f"{info['counts']['public']} public",
                    "training": f"trained elsewhere, not retrained ({info['parameters']} parameters; {info['model']}); "
                    f"access granted: {info['access']}",
                    "format": ", ".join(
                        x
                        for x in (
                            info.get("pipeline"),
                            f"{info['prediction_type']} prediction" if info.get("prediction_type") else None,
                            f"adapter: {info['adapter_format']}" if info.get("adapter_format") else None,
                        )
                        if x
                    )
                    or "not recorded",
                    "defenses": "unknown",
                    "manifest": info["manifest_sha256"][:16],
                    "run": info["run_dir"],
                }
            )
            continue
        cfg = info["config"]
        data = cfg["data"]
        audited.append(
            {
                "recipe": recipe,
                "data": f"{data['dataset']}" + (f" ({data['path']})" if data.get("path") else ""),
                "split": f"{info['counts']['members']} members / {info['counts']['nonmembers']} non-members "
                f"(calibration fraction {data['calibration_fraction']}) / {info['counts']['public']} public",
                "training": f"{cfg['train']['steps']} steps, batch {cfg['train']['batch_size']}, lr {cfg['train']['learning_rate']}, "
                f"{info['parameters']} parameters, seed {cfg['seed']}",
                "format": f"{(cfg.get('model') or {}).get('kind', 'unet2d')}, "
                f"{(cfg.get('model') or {}).get('prediction_type', 'epsilon')} prediction",
                "defenses": ", ".join(d.get("name", "?") for d in cfg.get("defenses", [])) or "none",
                "manifest": info["manifest_sha256"][:16],
                "run": info["run_dir"],
            }
        )

    doc = Document(f"diffmia audit: {results['benchmark']}", CSS)
    doc.add(
        Heading(f"Membership-inference audit: {results['benchmark']}", 1),
        para(f"diffmia {__version__}, {when}. Does each training recipe leak which images it was trained on?"),
        para(
            f"Environment: {describe(env)}. Scores are bit-reproducible on the same CPU capability, thread count and "
            "packages (results.json lists them all).",
            small=True,
        )
        if env
        else None,
        Heading("In plain words"),
        *[
            Risk(
                levels[recipe].split()[0],
                plain_sentence(
                    recipe, strongest(by_recipe[recipe]), by_recipe[recipe], results["recipes"][recipe], levels[recipe]
                ),
            )
            for recipe in bases
        ],
        para(DPIA_FRAMING),
        Heading("Glossary"),
        Bullets(GLOSSARY),
        Heading("Sign-off"),
    )

    def per_recipe(block) -> None:  # one block per recipe, under its name when there are several
        for recipe in bases:
            doc.add(Heading(recipe, 3) if len(bases) > 1 else None, block(recipe))

    per_recipe(lambda recipe: Table([], signoff(results, recipe, by_recipe), key_value=True, badges=(0,)))
    doc.add(para("Reviewed by: ____________________   Date: __________   Decision: accept / mitigate / reject"))
    doc.add(
        Heading("What a confident LOW needs"),
        para("Each item ticked ([x]) or not ([ ]) for this run; a LOW verdict without them is weak evidence."),
    )
    per_recipe(lambda recipe: Bullets(checklist(results, recipe, by_recipe[recipe])))
    doc.add(
        Heading("What to change in the recipe"),
        para("For the engineer who owns the recipe: what this run measured that drives its leakage, and the levers."),
    )
    per_recipe(lambda recipe: Bullets(what_to_change(results, recipe, by_recipe)))
    doc.add(
        para("Defenses diffmia trains and audits, each a config knob you can sweep (docs/defenses.md):"),
        Bullets(defenses_offered()),
    )
    doc.add(
        Heading("Risk summary"),
        *[Risk(levels[recipe].split()[0], text) for recipe, text in summaries.items()],
        Heading("What was audited"),
        Table(list(audited[0]), [list(map(str, a.values())) for a in audited]),
        Heading("Results"),
        para(
            "Calibrated: threshold fitted on the calibration halves, applied to the test halves. Oracle: best "
            "threshold on the test halves (for comparison with papers only)."
        ),
        Table(header, body, thin),
        para(THIN_NOTE, small=True),
    )
    spread_header, spread = spread_rows(results, by_recipe)
    crossings, ties = crossing_lines(by_recipe), ties_lines(results)
    if spread:
        doc.add(
            Heading("Spread across trainings"),
            para(
                "The same recipe trained with seeds seed, seed+1, ... (each its own split and training noise): the "
                "spread is what one training's intervals leave out."
            ),
            Table(spread_header, spread),
        )
    doc.add(
        Heading("Plots"),
        para(
            "ROC curves are oracle curves: every threshold, read on the test halves. The markers are the calibrated "
            "operating points the tables report (threshold fixed on the calibration halves), with 95% intervals; "
            "the strongest attack's curve is drawn thicker. Calibrated and oracle can cross at this sample size: the "
            "oracle is read at the target FPR exactly, the calibrated threshold lands where the calibration halves "
            "put it, an image or two away."
        ),
        Bullets(crossings) if crossings else None,
        *[Image(p) for p in plots["privacy_utility"] + plots["recipes"]],
    )
    exposed, not_run = _exposure_lines(results, shown), _skipped_lines(results)
    compared = _comparison(out, results)
    if compared:
        doc.add(
            Heading(f"Paired comparison with {next(iter(results['recipes']))}"),
            para(
                "Each recipe's strongest attack against the baseline's, on the same test images, with a stratified "
                "paired bootstrap (95% intervals; ",
                Code("diffmia compare"),
                " names another baseline).",
            ),
            Bullets(compared),
        )
    if exposed:
        doc.add(
            Heading("Most exposed images"),
            para(
                "Members with the smallest calibrated p-value under the strongest attack (the share of calibration "
                "non-members scoring at least as high; floor 1 / (calibration non-members + 1)): all of them in "
                "exposure.csv; file names and thumbnails only with --show-examples (manifest.json maps each sample "
                "id to its file)."
            ),
            Bullets(ties) if ties else None,
            Bullets(exposed),
        )
    grouped = results.get("groups") or {}
    if grouped:
        doc.add(
            Heading("Who is exposed: risk per group"),
            para(
                "Per group, the strongest attack at its calibrated 1%-FPR threshold (fixed on all calibration "
                "non-members): test members flagged with a 95% interval, the group's own test non-members flagged, "
                "and the members' median exposure (-log10 p). A group is more exposed than the rest when its members "
                "are flagged more often than the other groups' (Fisher exact test, Holm-corrected, 5%); exposure.csv "
                "carries each member's group."
            ),
        )
        for recipe, g in grouped.items():
            if recipe not in by_recipe:
                continue
            doc.add(
                Heading(f"{recipe} (groups by {g['spec']})", 3),
                Bullets(group_lines(g["rows"])),
                Table(*group_table(g["rows"])),
            )
    factors = _factor_lines(results)
    if factors:
        doc.add(
            Heading("What makes images exposed"),
            para(
                "Spearman correlation of simple image properties with exposure (-log10 of the calibrated p-value "
                "under the strongest attack); positive: more of the property, more exposed."
            ),
            Bullets(factors),
        )
        for recipe in results.get("exposure_factors", {}):
            plot = out / "plots" / f"exposure-factors-{recipe}.png"
            if plot.is_file():
                doc.add(Image(plot))
    if not_run:
        doc.add(Heading("Attacks not run"), Bullets(not_run))
    doc.add(
        Heading("What these numbers do not show"),
        Bullets(CAVEATS),
        para(
            "Every number here is derived from the per-sample score files listed in results.csv; rerun ",
            Code("diffmia report"),
            " on this folder to rebuild this page.",
        ),
    )
    appendix = [
        (f"Samples from {recipe}", out / info["run_dir"] / "samples.png")
        for recipe, info in results["recipes"].items()
        if (out / info["run_dir"] / "samples.png").is_file()
    ] + [(f"Most exposed test members of {recipe} (shown on request)", g) for recipe, g in examples.items() if g]
    if appendix:
        doc.add(Heading("Appendix: images"))
        for title, image in appendix:
            doc.add(Heading(title, 3), Image(image))
    write_text(out / "report.html", to_html(doc))
    write_text(out / "report.md", to_markdown(doc, out))
    return out / "report.html"


def chromium() -> str | None:
    """The headless browser the PDF print and the render check use, where installed."""
    import shutil

    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def write_pdf(html_path: str | Path, pdf_path: str | Path | None = None) -> Path:
    """The report as a PDF, printed by headless Chromium (the only HTML-to-PDF engine this project relies on; its
    absence is a clear error, not a missing page). Plots are embedded in the HTML, so nothing is fetched."""
    import subprocess
    import tempfile

    html_path = Path(html_path)
    pdf_path = Path(pdf_path) if pdf_path else html_path.with_suffix(".pdf")
    browser = chromium()
    if browser is None:
        raise ReportError("--pdf needs Chromium (Debian: apt-get install chromium); the HTML report is written")
    with tempfile.TemporaryDirectory() as tmp:
        tmp_pdf = Path(tmp) / "report.pdf"

        def print_pdf(*extra: str):
            return subprocess.run(
                [
                    browser,
                    "--headless",
                    *extra,
                    "--disable-gpu",
                    f"--user-data-dir={tmp}/profile",
                    "--no-pdf-header-footer",
                    f"--print-to-pdf={tmp_pdf}",
                    html_path.resolve().as_uri(),
                ],
                capture_output=True,
                text=True,
                timeout=180,
            )

        done = print_pdf()  # Chromium's sandbox kept where the machine allows it
        if (done.returncode != 0 or not tmp_pdf.is_file()) and "sandbox" in done.stderr.lower():
            import logging

            logging.getLogger("diffmia").warning(
                "Chromium's sandbox is not available on this machine (%s); the PDF is printed without it, from the "
                "report diffmia itself wrote",
                "running as root" if os.geteuid() == 0 else "no user namespaces",
            )
            done = print_pdf("--no-sandbox")
        if done.returncode != 0 or not tmp_pdf.is_file():
            raise ReportError(f"Chromium could not print {html_path}: {done.stderr.strip()[-300:]}")
        from diffmia.core.io import write_bytes

        write_bytes(pdf_path, tmp_pdf.read_bytes())
    return pdf_path
