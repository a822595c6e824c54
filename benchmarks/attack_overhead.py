"""How much each attack adds over its own model calls.

For each registered gray-box attack: score the audit images (batch 128) and record every forward pass it makes
(batch shape and timestep); then replay exactly those forward passes on the same inputs' shapes with no attack logic
and time them. Both in the same process, alternating, best of `--repeats`. Aim: attack / model-calls < 1.10.

    python benchmarks/attack_overhead.py [--run runs/digits-ddpm] [--repeats 3]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ensure_run, print_table  # noqa: E402

from diffmia.attacks import ATTACKS, AttackBatch, build_attack  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=Path("runs/digits-ddpm"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    loaded = ensure_run(args.run)
    target = loaded.target
    ids = [e.index for e, _ in loaded.manifest.audit_entries()][: args.batch_size * 2]
    batches = [
        AttackBatch(loaded.images.tensor(ids[i : i + args.batch_size]), ids[i : i + args.batch_size])
        for i in range(0, len(ids), args.batch_size)
    ]

    calls: list[tuple[torch.Size, torch.Tensor]] = []
    forward = target._forward

    def recording(x_t, t, cond):
        calls.append((x_t.shape, t.clone()))
        return forward(x_t, t, cond)

    rows = []
    for name in ATTACKS.names():
        if ATTACKS.get(name).access != "gray-box" or ATTACKS.get(name).needs_captions:
            continue
        attack = build_attack(name)
        target._forward = recording
        calls.clear()
        for b in batches:
            attack.score(target, b)
        target._forward = forward
        inputs = [(torch.randn(shape), t) for shape, t in calls]
        best_attack = best_model = float("inf")
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            for b in batches:
                attack.score(target, b)
            best_attack = min(best_attack, time.perf_counter() - t0)
            t0 = time.perf_counter()
            with torch.no_grad():
                for x, t in inputs:
                    forward(x, t, None)
            best_model = min(best_model, time.perf_counter() - t0)
        rows.append(
            {
                "attack": name,
                "forward passes": len(calls),
                "attack s": best_attack,
                "model calls s": best_model,
                "ratio": best_attack / best_model,
            }
        )
    print(f"{len(ids)} images, batch {args.batch_size}, best of {args.repeats}, {torch.get_num_threads()} threads")
    print_table(rows, ["attack", "forward passes", "attack s", "model calls s", "ratio"])


if __name__ == "__main__":
    main()
