"""Print the Markdown tables the README quotes, straight from a results folder written by `diffmia run`.

python benchmarks/results_table.py runs/benchmark            # privacy-utility table, strongest attack per recipe
python benchmarks/results_table.py runs/quickstart --all      # every attack of every recipe
python benchmarks/results_table.py runs/strongest --audit     # strongest attack at 1% and 0.1% FPR, one-run epsilon
python benchmarks/results_table.py runs/mnist-benchmark --low-fpr  # every attack at 1% and 0.1% FPR, with FP counts
python benchmarks/results_table.py runs/mnist-benchmark --matrix   # attacks x recipes: AUC / TPR@1% / TPR@0.1%
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from diffmia.evaluate.report import queries_text


def pct(v) -> str:
    return "" if pd.isna(v) else f"{v:.1%}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path)
    parser.add_argument("--all", action="store_true", help="every attack, not only the strongest per recipe")
    parser.add_argument("--audit", action="store_true", help="strongest attack at 1% and at 0.1% FPR, one-run epsilon")
    parser.add_argument(
        "--low-fpr",
        action="store_true",
        help="every attack at 1% and 0.1% FPR: calibrated TPR, its "
        "interval, the achieved FPR and the false positives it rests on",
    )
    parser.add_argument(
        "--matrix",
        action="store_true",
        help="attacks as rows, recipes as columns: AUC / calibrated "
        "TPR at 1% / at 0.1% FPR (italics: fewer than 10 calibration false positives behind the rate)",
    )
    args = parser.parse_args()
    df = pd.read_csv(args.results / "results.csv")
    results = json.loads((args.results / "results.json").read_text())
    if args.audit:
        return audit_table(df, results)
    if args.low_fpr:
        return low_fpr_table(df)
    if args.matrix:
        return matrix_table(df)
    if args.all:
        print(
            "| recipe | attack | queries (generated images) | AUC [95% CI] | TPR@1%FPR calibrated [95% CI] | achieved FPR | "
            "TPR@0.1%FPR | TPR@1%FPR oracle | ASR | epsilon (single-threshold heuristic) | epsilon one-run (canaries) |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        for _, r in df.iterrows():
            print(
                f"| {r.recipe} | {r.attack} | {queries_text(r)} | {r.auc:.3f} [{r.auc_ci_lo:.3f}, {r.auc_ci_hi:.3f}] "
                f"| {pct(r['tpr@1%fpr'])} [{pct(r['tpr@1%fpr_ci_lo'])}, {pct(r['tpr@1%fpr_ci_hi'])}] "
                f"| {pct(r['fpr@1%fpr_achieved'])} | {pct(r['tpr@0.1%fpr'])} | {pct(r['tpr@1%fpr_oracle'])} "
                f"| {r.asr:.3f} | {r.epsilon_lower_bound:.2f} | {one_run(r)} |"
            )
        return
    print(
        "| recipe | defenses | DP epsilon (accountant) | strongest attack | AUC [95% CI] | TPR@1%FPR calibrated [95% CI] "
        "| epsilon (single-threshold heuristic) | FID (floor) | duplicated members: AUC |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for recipe, rows in df.groupby("recipe", sort=False):
        top = rows.assign(gap=rows["tpr@1%fpr"] - rows["fpr@1%fpr_achieved"]).sort_values(["gap", "auc"]).iloc[-1]
        dp = "" if pd.isna(top.get("dp_epsilon")) else f"{top['dp_epsilon']:.2f}"
        dup = "" if "dup_auc" not in top or pd.isna(top.get("dup_auc")) else f"{top['dup_auc']:.3f}"
        fid = "" if pd.isna(top.fid) else f"{top.fid:.2f} ({top.fid_floor:.2f})"
        print(
            f"| {recipe} | {top.get('defenses', 'none')} | {dp} | {top.attack} | {top.auc:.3f} [{top.auc_ci_lo:.3f}, {top.auc_ci_hi:.3f}] "
            f"| {pct(top['tpr@1%fpr'])} [{pct(top['tpr@1%fpr_ci_lo'])}, {pct(top['tpr@1%fpr_ci_hi'])}] "
            f"| {top.epsilon_lower_bound:.2f} | {fid} | {dup} |"
        )
    curves = {r: i["set_level"] for r, i in results["recipes"].items() if i.get("set_level")}
    if curves:
        print("\nSet-level AUC by set size L (test halves):\n")
        for recipe, by_attack in curves.items():
            sizes = [row["set_size"] for row in next(iter(by_attack.values()))]
            print(f"| {recipe} | " + " | ".join(f"L={s}" for s in sizes) + " |")
            print("|---|" + "---|" * len(sizes))
            for attack, rows in by_attack.items():
                print(f"| {attack} | " + " | ".join(f"{row['auc']:.3f}" for row in rows) + " |")
            print()


def one_run(r) -> str:
    eps = r.get("epsilon_one_run")
    return "" if eps is None or pd.isna(eps) else f"{eps:.2f} ({r.get('one_run_guesses')})"


def audit_table(df: pd.DataFrame, results: dict) -> None:
    """Per recipe: the strongest attack at each FPR (largest lower bound of calibrated TPR - achieved FPR, which a
    drifted threshold cannot inflate), and the recipe's headline one-run epsilon (pre-registered split over all its
    attacks) with the accountant's beside it."""
    print(
        "| recipe | DP epsilon (accountant) | strongest at 1% FPR: attack, TPR [95% CI] (achieved FPR) "
        "| strongest at 0.1% FPR: attack, TPR [95% CI] (achieved FPR) | epsilon one-run: headline (attack, right guesses "
        "on the held-out canaries) "
        "| LiRA online AUC / PIA AUC |"
    )
    print("|---|---|---|---|---|---|")
    for recipe, rows in df.groupby("recipe", sort=False):
        cells = []
        for key in ("1%", "0.1%"):
            tpr, fpr = f"tpr@{key}fpr", f"fpr@{key}fpr_achieved"
            top = rows.assign(lower=rows[f"{tpr}_ci_lo"] - rows[f"{fpr}_ci_hi"]).sort_values(["lower", "auc"]).iloc[-1]
            cells.append(
                f"{top.attack}: {pct(top[tpr])} [{pct(top[f'{tpr}_ci_lo'])}, {pct(top[f'{tpr}_ci_hi'])}] "
                f"({pct(top[fpr])})"
            )
        headline = results["recipes"].get(recipe, {}).get("one_run_headline")
        eps = (
            ""
            if not headline
            else (
                f"{headline['epsilon']:.2f} ({headline['attack']}, {headline['correct']}/"
                f"{headline['guesses']} of {headline['canaries']})"
            )
        )
        dp = rows.dp_epsilon.dropna()
        lira = rows[rows.attack == "lira(online)"].auc
        pia = rows[rows.attack == "pia"].auc
        versus = f"{lira.iloc[0]:.3f} / {pia.iloc[0]:.3f}" if len(lira) and len(pia) else ""
        print(f"| {recipe} | {'' if dp.empty else f'{dp.iloc[0]:.2f}'} | {cells[0]} | {cells[1]} | {eps} | {versus} |")


def low_fpr_table(df: pd.DataFrame) -> None:
    """Every attack of every recipe at 1% and 0.1% FPR (thresholds from the calibration non-members): calibrated TPR
    [Clopper-Pearson 95%], the achieved FPR on the test non-members and the false positives behind it (test / the
    calibration ones that fixed the threshold); rates resting on fewer than 10 calibration false positives in italics."""
    print(
        "| recipe | attack | queries | AUC [95% CI] | TPR@1%FPR [95% CI] | achieved FPR (FP test / cal.) "
        "| TPR@0.1%FPR [95% CI] | achieved FPR (FP test / cal.) | FID (floor) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for _, r in df.iterrows():
        cells = []
        for key in ("1%", "0.1%"):
            tpr, fpr = f"tpr@{key}fpr", f"fpr@{key}fpr"
            rate = f"{pct(r[tpr])} [{pct(r[f'{tpr}_ci_lo'])}, {pct(r[f'{tpr}_ci_hi'])}]"
            thin = r.get(f"fp@{key}fpr_calibration", 10) < 10
            cells.append(f"*{rate}*" if thin else rate)
            cells.append(
                f"{pct(r[f'{fpr}_achieved'])} ({int(r[f'fp@{key}fpr'])} / {int(r[f'fp@{key}fpr_calibration'])})"
            )
        fid = "" if pd.isna(r.fid) else f"{r.fid:.2f} ({r.fid_floor:.2f})"
        print(
            f"| {r.recipe} | {r.attack} | {queries_text(r)} | {r.auc:.3f} [{r.auc_ci_lo:.3f}, {r.auc_ci_hi:.3f}] "
            f"| {' | '.join(cells)} | {fid} |"
        )
    n = df.n_test_nonmembers.iloc[0] if "n_test_nonmembers" in df else None
    if n:
        print(f"\n{int(n)} test non-members: 0.1% FPR is {n * 0.001:g} false positive(s); 1% is {n * 0.01:g}.")


def matrix_table(df: pd.DataFrame) -> None:
    """Attacks x recipes, each cell AUC / TPR@1%FPR / TPR@0.1%FPR (calibrated thresholds, test halves); then each
    recipe's FID (floor) and train seconds."""
    recipes = list(dict.fromkeys(df.recipe))
    print("| attack | queries | " + " | ".join(recipes) + " |")
    print("|---|---|" + "---|" * len(recipes))
    for attack in dict.fromkeys(df.attack):
        rows = {r.recipe: r for _, r in df[df.attack == attack].iterrows()}
        cells = []
        for recipe in recipes:
            r = rows.get(recipe)
            if r is None:
                cells.append("")
                continue
            rates = []
            for key in ("1%", "0.1%"):
                rate = pct(r[f"tpr@{key}fpr"])
                rates.append(f"*{rate}*" if r.get(f"fp@{key}fpr_calibration", 10) < 10 else rate)
            cells.append(f"{r.auc:.3f} / {rates[0]} / {rates[1]}")
        queries = [queries_text(rows[x]) for x in recipes if x in rows]  # a tuned setting can differ per recipe
        shown = queries[0] if len(set(queries)) == 1 else " / ".join(queries) + " (per recipe)"
        print(f"| {attack} | {shown} | " + " | ".join(cells) + " |")
    first = {r.recipe: r for _, r in df.iterrows()}
    fid = [("" if pd.isna(first[x].fid) else f"{first[x].fid:.2f} ({first[x].fid_floor:.2f})") for x in recipes]
    print("| FID (floor) | | " + " | ".join(fid) + " |")
    secs = [("" if pd.isna(first[x].train_seconds) else f"{first[x].train_seconds:.0f}") for x in recipes]
    print("| training seconds | | " + " | ".join(secs) + " |")


if __name__ == "__main__":
    main()
