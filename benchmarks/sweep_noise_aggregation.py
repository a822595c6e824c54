"""The noise-aggregation ablation of arXiv 2510.21783 on our target: injection timestep T, number of predictions k,
and aggregation measure, one factor at a time around the defaults (T=80, k=5, stride 10, l2).

    python benchmarks/sweep_noise_aggregation.py [--run runs/digits-ddpm]

Prints AUC and TPR@1%FPR on the test halves for each setting (trains the default target first if the run is absent).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ensure_run, print_table  # noqa: E402

from diffmia.attacks import build_attack  # noqa: E402
from diffmia.attacks.runner import run_attack  # noqa: E402
from diffmia.evaluate.metrics import auc, tpr_at_fpr  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=Path("runs/digits-ddpm"))
    args = parser.parse_args()
    loaded = ensure_run(args.run)
    grid = (
        [("T", {"timestep": T}) for T in (40, 60, 80, 100, 150, 200, 300)]
        + [("stride", {"stride": m}) for m in (2, 5, 20)]
        + [("k", {"k": k}) for k in (2, 3, 4, 6, 8)]
        + [("aggregation", {"aggregation": a}) for a in ("l1", "mse", "centroid", "density", "hull")]
        + [("sigma", {"sigma": 0.1, "stride": 5}), ("draws", {"draws": 4})]
    )
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for factor, params in grid:
            result = run_attack(loaded, build_attack("noise_aggregation", params), tmp, progress=False)
            test = result.scores[result.scores.split == "test"]
            rows.append(
                {
                    "factor": factor,
                    "setting": ", ".join(f"{k}={v}" for k, v in params.items()),
                    "AUC": auc(test.is_member, test.score),
                    "TPR@1%FPR": tpr_at_fpr(test.is_member, test.score, 0.01),
                    "queries": result.info["queries_per_sample"],
                }
            )
    print(f"noise_aggregation sweep on {args.run} (defaults T=80, k=5, stride=10, l2; test halves)")
    print_table(rows, ["factor", "setting", "AUC", "TPR@1%FPR", "queries"])


if __name__ == "__main__":
    main()
