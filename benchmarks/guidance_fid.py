"""FID of every text-conditioned recipe of a `diffmia run` results folder against the classifier-free guidance scale.

Small text-conditioned targets trained with 10% caption dropout have a weak unconditional branch; at guidance 3 the
extrapolation cond + 3 (cond - uncond) produces artifacts that dominate the FID. This sweep shows how much of a
recipe's FID is the model and how much the sampling setting (the t2i benchmark reports FID at guidance 1).

    python benchmarks/guidance_fid.py runs/t2i-benchmark [--scales 1,1.5,2,3] [--samples 256]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import print_table  # noqa: E402

from diffmia.evaluate.fid import UtilityConfig, compute_utility  # noqa: E402
from diffmia.targets.runs import load_run  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, help="a folder written by `diffmia run`")
    parser.add_argument("--scales", default="1,1.5,2,3")
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--steps", type=int, default=50)
    args = parser.parse_args()
    scales = [float(s) for s in args.scales.split(",")]
    results = json.loads((args.results / "results.json").read_text())
    rows = []
    for recipe, info in results["recipes"].items():
        loaded = load_run(args.results / info["run_dir"])
        if not loaded.target.conditional:
            continue
        row = {"recipe": recipe}
        for g in scales:
            cfg = UtilityConfig(samples=args.samples, sample_steps=args.steps, guidance_scale=g)
            u = compute_utility(loaded, cfg, args.results / "cache")
            row[f"guidance {g:g}"] = f"{u['fid']:.1f}"
        row["floor"] = f"{u['fid_floor']:.1f}"
        rows.append(row)
    if not rows:
        sys.exit(f"{args.results}: no text-conditioned recipe")
    print(f"{u['fid_label']}, {args.samples} samples, {args.steps} DDIM steps, by guidance scale:\n")
    print_table(rows, ["recipe"] + [f"guidance {g:g}" for g in scales] + ["floor"])


if __name__ == "__main__":
    main()
