"""Print the Markdown tables the README quotes, straight from a results folder written by `diffmia run`.

    python benchmarks/results_table.py runs/benchmark            # privacy-utility table, strongest attack per recipe
    python benchmarks/results_table.py runs/quickstart --all      # every attack of every recipe
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
    args = parser.parse_args()
    df = pd.read_csv(args.results / "results.csv")
    results = json.loads((args.results / "results.json").read_text())
    if args.all:
        print("| recipe | attack | queries (generated images) | AUC [95% CI] | TPR@1%FPR calibrated [95% CI] | achieved FPR | "
              "TPR@0.1%FPR | TPR@1%FPR oracle | ASR | epsilon (single-threshold heuristic) |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for _, r in df.iterrows():
            print(f"| {r.recipe} | {r.attack} | {queries_text(r)} | {r.auc:.3f} [{r.auc_ci_lo:.3f}, {r.auc_ci_hi:.3f}] "
                  f"| {pct(r['tpr@1%fpr'])} [{pct(r['tpr@1%fpr_ci_lo'])}, {pct(r['tpr@1%fpr_ci_hi'])}] "
                  f"| {pct(r['fpr@1%fpr_achieved'])} | {pct(r['tpr@0.1%fpr'])} | {pct(r['tpr@1%fpr_oracle'])} "
                  f"| {r.asr:.3f} | {r.epsilon_lower_bound:.2f} |")
        return
    print("| recipe | defenses | DP epsilon (accountant) | strongest attack | AUC [95% CI] | TPR@1%FPR calibrated [95% CI] "
          "| epsilon (single-threshold heuristic) | FID (floor) | duplicated members: AUC |")
    print("|---|---|---|---|---|---|---|---|---|")
    for recipe, rows in df.groupby("recipe", sort=False):
        top = rows.assign(gap=rows["tpr@1%fpr"] - rows["fpr@1%fpr_achieved"]).sort_values(["gap", "auc"]).iloc[-1]
        dp = "" if pd.isna(top.get("dp_epsilon")) else f"{top['dp_epsilon']:.2f}"
        dup = "" if "dup_auc" not in top or pd.isna(top.get("dup_auc")) else f"{top['dup_auc']:.3f}"
        fid = "" if pd.isna(top.fid) else f"{top.fid:.2f} ({top.fid_floor:.2f})"
        print(f"| {recipe} | {top.get('defenses', 'none')} | {dp} | {top.attack} | {top.auc:.3f} [{top.auc_ci_lo:.3f}, {top.auc_ci_hi:.3f}] "
              f"| {pct(top['tpr@1%fpr'])} [{pct(top['tpr@1%fpr_ci_lo'])}, {pct(top['tpr@1%fpr_ci_hi'])}] "
              f"| {top.epsilon_lower_bound:.2f} | {fid} | {dup} |")
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


if __name__ == "__main__":
    main()
