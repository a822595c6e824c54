"""What a report tells the people who act on it: the checklist a confident LOW needs, ticked or not for this run
(for the reviewer), and what to change in the recipe (for the engineer who owns it), from what the run measured."""

from __future__ import annotations

import math
from dataclasses import dataclass

from .blind import shifted
from .plain import measurable
from .verdict import strongest

YES, NO = "[x]", "[ ]"

# The knob of each built-in defense, for the engineer (plugins are listed by name).
DEFENSE_KNOBS = {
    "dp_sgd": "DP-SGD through opacus, with an accountant epsilon (an upper bound); knob: epsilon or noise_multiplier",
    "lora": "train a low-rank adapter on a base model trained on public data; knob: rank",
    "public_base": "fine-tune from a base model trained on public data; knob: base_steps",
    "dedup": "drop near-duplicate training images before training; knob: threshold",
    "image_noise": "add noise to training images; knob: std",
    "input_perturbation": "extra noise in the noised input during training; knob: gamma",
    "dual_model": "two models trained on disjoint halves, each answering for the other's half; knob: teacher_steps",
    "caption_randomisation": "text targets: replace captions at random during training; knob: probability",
    "text_embedding_noise": "text targets: noise on the text embedding during training; knob: std",
}


def seeds_of(results: dict, recipe: str) -> list[str]:
    """The recipe and its retrainings (`seeds: N` in the benchmark: recipes named RECIPE+seedK)."""
    return [recipe] + [name for name, info in results["recipes"].items() if info.get("seed_of") == recipe]


@dataclass(frozen=True)
class Coverage:
    """What this run covered for one recipe: the facts both the checklist and the sign-off's 'not tested' read."""

    test_nonmembers: int
    resolves_low_fpr: bool  # TPR at 0.1% FPR measurable (>= 1000 test non-members, or their count unknown)
    accesses: frozenset[str]
    references: bool
    canaries: bool
    trainings: int
    duplicates_measured: bool
    deduplicated: bool
    set_level: bool
    external: bool
    skipped: tuple[str, ...]
    blind: dict | None  # the blind baseline's metrics (evaluate/blind.py), None where it did not run

    @classmethod
    def of(cls, results: dict, recipe: str, rows: list[dict]) -> "Coverage":
        info = results["recipes"][recipe]
        top = strongest(rows)
        return cls(
            test_nonmembers=top.get("n_test_nonmembers") or 0,
            resolves_low_fpr=measurable(top, 0.001),
            accesses=frozenset(r["access"] for r in rows),
            references=any(r.get("references") for r in rows),
            canaries=bool(info.get("one_run_headline")),
            trainings=len(seeds_of(results, recipe)),
            duplicates_measured=any(r.get("dup_auc") is not None for r in rows),
            deduplicated="dedup" in str(top.get("defenses", "")).split("+"),
            set_level=bool(info.get("set_level")),
            external=bool(info.get("external")),
            skipped=tuple(info.get("skipped_attacks") or {}),
            blind=info.get("blind_baseline"),
        )


def checklist(results: dict, recipe: str, rows: list[dict]) -> list[str]:
    """What a confident LOW needs, each item ticked ([x]) or not ([ ]) for this run."""
    c = Coverage.of(results, recipe, rows)
    items = [
        (
            c.test_nonmembers >= 1000,
            f">= 1000 test non-members, so that TPR at 0.1% FPR is measurable ({c.test_nonmembers} here)",
        ),
        (c.references, "the reference-model attacks (LiRA, RMIA), the strongest known, were run"),
        (c.canaries, "canaries with a valid one-run epsilon (data.canaries)"),
        (c.trainings >= 2, f"several trainings of the recipe (seeds: N; {c.trainings} trained here)"),
        (
            {"gray-box", "black-box"} <= c.accesses,
            "every access a deployment gives: gray-box and black-box attacks (tested here: "
            + ", ".join(sorted(c.accesses))
            + ")",
        ),
        (c.duplicates_measured or c.deduplicated, "duplicated training images measured apart, or deduplicated"),
        (c.set_level, "a set-level test (evaluation.set_sizes): was a collection used?"),
    ]
    if c.blind:
        auc = f"AUC {c.blind['auc']:.3f} [{c.blind['auc_ci_lo']:.3f}, {c.blind['auc_ci_hi']:.3f}]"
        if c.blind.get("random_split"):
            items.append((True, f"members and non-members drawn at random from one dataset (blind baseline {auc})"))
        elif shifted(c.blind):
            items.append(
                (False, f"members and non-members from one distribution: the blind baseline separates them ({auc})")
            )
        else:
            items.append((True, f"a blind baseline (a model-free classifier) does not separate the two sets ({auc})"))
    elif c.external:
        items.append((False, "a blind baseline (a model-free classifier) on the member and non-member folders"))
    else:
        items.append((True, "members and non-members drawn at random from one dataset (no blind baseline needed)"))
    items.append((False, "extraction through generation (do generated images reproduce training images?)"))
    return [f"{YES if ok else NO} {text}" for ok, text in items]


def not_tested(results: dict, recipe: str, rows: list[dict]) -> list[str]:
    """The sign-off's 'not tested' line: every unticked item, in short."""
    c = Coverage.of(results, recipe, rows)
    out = [f"{n} (see Attacks not run)" for n in c.skipped]
    missing = [a for a in ("gray-box", "black-box", "white-box") if a not in c.accesses]
    if missing:
        out.append(f"{', '.join(missing)} access")
    if not c.references:
        out.append("no reference-model attack (LiRA/RMIA): the strongest known attacks were not run")
    if not c.canaries:
        out.append("no canaries: no valid empirical epsilon")
    if not c.resolves_low_fpr:
        out.append(f"TPR at 0.1% FPR ({c.test_nonmembers} test non-members < 1000)")
    if c.trainings < 2:
        out.append("one training only (seeds: N)")
    if not c.duplicates_measured:
        out.append("duplicated images")
    if not c.set_level:
        out.append("set-level inference")
    if shifted(c.blind) and not c.blind.get("random_split"):
        out.append("members and non-members from one distribution (the blind baseline separates them)")
    elif c.external and not c.blind:
        out.append("blind baseline of the folders")
    out.append("extraction through generation")
    return out


def epochs(info: dict) -> float | None:
    """Passes over each training image: steps x batch / members (None for a model trained elsewhere)."""
    cfg = info.get("config")
    if not cfg or info.get("external"):
        return None
    members = info["counts"]["members"]
    return cfg["train"]["steps"] * cfg["train"]["batch_size"] / max(members, 1)


def gap_line(gap: dict | None) -> str | None:
    """The member / non-member loss gap the training run measured, at the timestep where it is largest."""
    if not gap:
        return None
    t, g = max(gap.items(), key=lambda item: item[1].get("ratio", 0))
    return (
        f"the run measured the denoising loss of held-out images at {g['ratio']:.2f}x that of training images at "
        f"t={t} ({g['nonmembers_test']:.4f} vs {g['members']:.4f}; 1.00 = no gap): the model fits its training "
        f"images better than others of the same kind, which is what the attacks exploit"
    )


def fid_text(u: dict | None) -> str:
    """'12.22 [11.1, 13.6] (floor 6.35)' with the bootstrap interval where measured."""
    if not u:
        return "not measured"
    ci = f" [{u['fid_ci_lo']:.2f}, {u['fid_ci_hi']:.2f}]" if u.get("fid_ci_lo") is not None else ""
    return f"{u['fid_label']} {u['fid']:.2f}{ci} (floor {u['fid_floor']:.2f})"


def fid_change(base: dict | None, other: dict | None) -> str:
    """The FID change between two recipes with an approximate 95% interval (independent bootstraps of the generated
    samples, normal approximation), or the plain difference where no interval was measured."""
    if not base or not other:
        return "FID not measured"
    diff = other["fid"] - base["fid"]
    sds = [u.get("fid_boot_sd") for u in (base, other)]
    if all(s is not None and s == s for s in sds):
        half = 1.96 * math.sqrt(sds[0] ** 2 + sds[1] ** 2)
        return f"FID {base['fid']:.2f} -> {other['fid']:.2f} ({diff:+.2f} [{diff - half:+.2f}, {diff + half:+.2f}])"
    return f"FID {base['fid']:.2f} -> {other['fid']:.2f} ({diff:+.2f}, no interval measured)"


def what_to_change(results: dict, recipe: str, by_recipe: dict[str, list[dict]]) -> list[str]:
    """For the engineer: the recipe's own numbers that drive its leakage, and the defenses with their measured
    cost where this report compares recipes."""
    info = results["recipes"][recipe]
    rows = by_recipe[recipe]
    top = strongest(rows)
    lines = []
    passes = epochs(info)
    if passes is not None:
        cfg = info["config"]["train"]
        lines.append(
            f"Passes over each image: {cfg['steps']} steps x batch {cfg['batch_size']} / {info['counts']['members']} "
            f"members = {passes:.0f} epochs. Memorisation grows with passes: fewer steps, or more training images for "
            f"the same steps, lowers it (measure the FID it costs)."
        )
    gap = gap_line(info.get("gap"))
    if gap:
        lines.append(f"Loss gap: {gap}.")
    if top.get("dup_auc") is not None:
        lines.append(
            f"Duplicates: the {top['dup_members']} duplicated members are found with AUC {top['dup_auc']:.3f} "
            f"(all members: {top['auc']:.3f}); deduplicate the training set (defense dedup)."
        )
    compared = [name for name in by_recipe if name != recipe and not results["recipes"][name].get("seed_of")]
    if not info.get("seed_of") and compared and recipe == next(iter(by_recipe)):
        for name in compared:
            other = strongest(by_recipe[name])
            lines.append(
                f"Measured here, {name} ({other.get('defenses', 'none')}) against {recipe}: strongest attack's TPR at "
                f"1% FPR {top['tpr@1%fpr']:.1%} -> {other['tpr@1%fpr']:.1%} ({other['attack']}), AUC "
                f"{top['auc']:.3f} -> {other['auc']:.3f}, "
                + fid_change(info.get("utility"), results["recipes"][name].get("utility"))
                + "."
            )
    elif not compared:
        lines.append(
            "No defended recipe is in this report, so no cost is measured here: add recipes with a defense to the "
            "benchmark (configs/benchmark.yaml sweeps them; docs/results/ has the project's measured trade-offs)."
        )
    return lines


def defenses_offered() -> list[str]:
    """Every registered defense with what it does and its knob (plugins by name)."""
    from diffmia.core.registries import DEFENSES

    return [f"{n}: {DEFENSE_KNOBS.get(n, 'a plugin defense')}" for n in DEFENSES.names()]
