"""Score a fixed list of attack settings on one trained run and write their score files: run it with two checkouts
(each in its own environment) on the same run and compare the files byte for byte, to check that a change leaves
the scores as they were.

    python -c "from diffmia.core.config import load_config; from diffmia.targets.train import train_target; \\
        train_target(load_config('configs/tiny.yaml', ['train.steps=100']), 'runs/ident/run', progress=False)"
    DIFFMIA_CACHE=runs/ident/cache-a python benchmarks/score_files.py runs/ident/run runs/ident/a
    DIFFMIA_CACHE=runs/ident/cache-b OTHER_ENV/bin/python benchmarks/score_files.py runs/ident/run runs/ident/b
    diff -r runs/ident/a runs/ident/b --exclude '*.json'

A text-conditioned run (configs/tiny-t2i.yaml) gets the caption attacks instead (--text). Each checkout trains its own
reference models (LiRA, GSA) into its own cache, so the whole pipeline is compared, not only the scoring.
"""

from __future__ import annotations

import argparse
from pathlib import Path

PIXEL = {
    "naive_loss": ("naive_loss", {"draws": 2}),
    "pia": ("pia", {}),
    "pian": ("pian", {}),
    "secmi": ("secmi", {}),
    "sima": ("sima", {"timestep": 10}),
    "noise_aggregation": ("noise_aggregation", {}),
    "noise_aggregation-hull": ("noise_aggregation", {"aggregation": "hull"}),
    "noise_aggregation-density": ("noise_aggregation", {"aggregation": "density"}),
    "rediffuse": ("rediffuse", {"repeats": 2, "steps": 3}),
    "quantile_regression": ("quantile_regression", {"statistic": "loss", "bags": 2, "epochs": 3}),
    "lira": ("lira", {"references": 2, "draws": 1}),
    "gsa": ("gsa", {"references": 2, "timesteps": 3, "trees": 20}),
}
TEXT = {
    "clid": ("clid", {"timesteps": [440]}),
    "sd_mia": ("sd_mia", {"generations": 2, "steps": 3}),
    "pia": ("pia", {}),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--text", action="store_true", help="the caption attacks, for a text-conditioned run")
    args = ap.parse_args()
    from diffmia.attacks import build_attack
    from diffmia.attacks.runner import run_attack
    from diffmia.targets.runs import load_run

    loaded = load_run(args.run)
    for key, (name, params) in (TEXT if args.text else PIXEL).items():
        result = run_attack(loaded, build_attack(name, params, seed=1), args.out / key, progress=False)
        print(f"{key}: {result.csv_path}")


if __name__ == "__main__":
    main()
