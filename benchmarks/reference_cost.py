"""What the strongest verdict costs: RMIA with 1, 2 and 4 references (offline) and 2 and 4 (online, paired) against
LiRA online with 8, on one target with canaries. Per attack: AUC [95% CI], TPR at a calibrated 1% FPR [95% CI] with
the achieved FPR, and the seconds spent training the references it uses (each reference's own training loop, from its
summary.json: references are shared between attacks through the cache, so each attack is charged all of its own).

    python benchmarks/reference_cost.py --steps 500 --out runs/reference-cost

Writes a `diffmia run` results folder (report included) under --out; a rerun reuses every cached cell and
reference. Online RMIA's 2 and 4 references are the first pairs of LiRA's 8 (same seed and mode).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from common import REPO, print_table

from diffmia.core import parallel
from diffmia.core.config import load_config
from diffmia.matrix import BenchmarkConfig, run_matrix


def attacks() -> list[dict]:
    out = [{"name": "lira", "label": "lira(online,8)", "params": {"references": 8, "mode": "online"}}]
    out += [
        {"name": "rmia", "label": f"rmia(online,{n})", "params": {"references": n, "mode": "online"}} for n in (2, 4)
    ]
    out += [
        {"name": "rmia", "label": f"rmia(offline,{n})", "params": {"references": n, "mode": "offline"}}
        for n in (1, 2, 4)
    ]
    return out


def reference_seconds(out: Path, row: dict) -> float:
    info = json.loads((out / row["scores"]).with_suffix(".json").read_text())
    folders = (info.get("references") or {}).get("folders", [])
    return sum(json.loads((Path(f) / "summary.json").read_text())["train_seconds_this_session"] or 0.0 for f in folders)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=500, help="training steps of the target and of every reference")
    ap.add_argument("--canaries", type=int, default=200)
    ap.add_argument("--jobs", type=int, default=2, help="references trained at once (diffmia --jobs)")
    ap.add_argument("--out", type=Path, default=REPO / "runs" / "reference-cost")
    args = ap.parse_args()
    os.environ[parallel.JOBS_ENV] = str(args.jobs)
    overrides = [f"train.steps={args.steps}", f"data.canaries={args.canaries}", "train.checkpoint_every=250"]
    bench = BenchmarkConfig(
        name="reference-cost",
        attacks=attacks(),
        utility={"enabled": False},
        recipes=[{"name": "no-defense", "config": "digits-ddpm.yaml", "set": overrides}],
    )
    recipes = {"no-defense": load_config(REPO / "configs" / "digits-ddpm.yaml", overrides)}
    t0 = time.time()
    results = run_matrix(bench, recipes, args.out, progress=False)
    rows = []
    for r in results["rows"]:
        rows.append(
            {
                "attack": r["attack"],
                "references": r["references"],
                "AUC [95% CI]": f"{r['auc']:.3f} [{r['auc_ci_lo']:.3f}, {r['auc_ci_hi']:.3f}]",
                "TPR@1%FPR calibrated [95% CI]": f"{r['tpr@1%fpr']:.1%} [{r['tpr@1%fpr_ci_lo']:.1%}, "
                f"{r['tpr@1%fpr_ci_hi']:.1%}]",
                "achieved FPR": f"{r['fpr@1%fpr_achieved']:.1%}",
                "reference training s": round(reference_seconds(args.out, r), 1),
                "one-run eps (per attack)": "" if r["epsilon_one_run"] is None else f"{r['epsilon_one_run']:.2f}",
            }
        )
    headline = results["recipes"]["no-defense"].get("one_run_headline") or {}
    print(
        f"digits-ddpm at {args.steps} steps, {args.canaries} canaries, --jobs {args.jobs}, "
        f"{parallel.usable_cpus()} usable CPUs; {time.time() - t0:.0f} s this run"
    )
    print_table(rows, list(rows[0]))
    if headline:
        print(
            f"headline one-run epsilon (pre-registered split over these {headline['attacks']} attacks): "
            f"{headline['epsilon']:.2f} from {headline['attack']} ({headline['correct']}/{headline['guesses']} on "
            f"{headline['canaries']} held-out canaries)"
        )


if __name__ == "__main__":
    main()
