"""Throughput per device: images per second of every single-model attack, FID sampling and feature extraction, and a
training step, on one trained target; plus the projection of a large audit from these rates.

    python benchmarks/throughput.py [--run runs/digits-ddpm] [--images 256] [--device cpu|cuda]

Every figure is measured in this process (best of --repeats); the device and torch threads are printed with it.
The projection (--project 25000) multiplies the measured per-image cost of each attack by the images of a
25k / 25k audit and adds 8 reference trainings for LiRA at the measured step time; it scales linearly with the
number of processes only as far as scoring shards do (every process scores every world-th batch).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ensure_run, print_table  # noqa: E402

from diffmia.attacks import ATTACKS, build_attack  # noqa: E402
from diffmia.attacks.base import batch_of  # noqa: E402
from diffmia.core.environment import describe, environment  # noqa: E402


def best_of(repeats: int, fn) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=Path("runs/digits-ddpm"))
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--project", type=int, default=25000, help="images per side of the projected audit")
    parser.add_argument("--train-steps", type=int, default=4000, help="steps of one projected reference training")
    args = parser.parse_args()
    loaded = ensure_run(args.run)
    if args.device != "cpu":
        from diffmia.targets.runs import load_run

        loaded = load_run(args.run, device=args.device)
    target = loaded.target
    ids = [e.index for e, _ in loaded.manifest.audit_entries()][: args.images]
    batches = [batch_of(loaded, ids[i : i + args.batch_size]) for i in range(0, len(ids), args.batch_size)]
    rows = []
    for name in ATTACKS.names():
        cls = ATTACKS.get(name)
        if cls.needs_references or cls.needs_captions or name in ("quantile_regression", "sima"):
            continue  # reference attacks: training cost (below); the rest need fitting on a split first
        attack = build_attack(name)
        attack.prepare(loaded, loaded.run.root / ".cache")
        seconds = best_of(args.repeats, lambda: [attack.score(target, b) for b in batches])
        rows.append(
            {
                "stage": f"attack {name}",
                "queries/image": attack.queries_per_sample(target),
                "images/s": len(ids) / seconds,
                "s per 1k images": 1000 * seconds / len(ids),
            }
        )

    def sample() -> None:
        target.generate(64, steps=50, batch_size=64, generator=torch.Generator().manual_seed(0))

    seconds = best_of(args.repeats, sample)
    rows.append(
        {
            "stage": "FID sampling (50 DDIM steps)",
            "queries/image": 50,
            "images/s": 64 / seconds,
            "s per 1k images": 1000 * seconds / 64,
        }
    )
    from diffmia.evaluate.features import public_digits_classifier

    net, _ = public_digits_classifier(
        loaded.images, loaded.manifest, loaded.resolution, 0, cache_dir=loaded.run.root / ".cache"
    )
    x = torch.cat([b.images for b in batches])
    seconds = best_of(args.repeats, lambda: net(x))
    rows.append(
        {
            "stage": "FID features (digits classifier)",
            "queries/image": 0,
            "images/s": len(x) / seconds,
            "s per 1k images": 1000 * seconds / len(x),
        }
    )
    # one training step at the recipe's batch size
    unet = target.unet
    unet.train()
    opt = torch.optim.AdamW(unet.parameters(), lr=1e-4)
    xb = torch.cat([b.images for b in batches])[: loaded.config.train.batch_size].to(target.device)

    def step() -> None:
        t = torch.randint(0, target.num_train_timesteps, (len(xb),), device=target.device)
        noise = torch.randn_like(xb)
        loss = torch.nn.functional.mse_loss(unet(target.noise_scheduler.add_noise(xb, noise, t), t).sample, noise)
        loss.backward()
        opt.step()
        opt.zero_grad()

    seconds = best_of(args.repeats, lambda: [step() for _ in range(5)]) / 5
    unet.eval()
    rows.append(
        {
            "stage": f"training step (batch {len(xb)})",
            "queries/image": 0,
            "images/s": len(xb) / seconds,
            "s per 1k images": 1000 * seconds / len(xb),
        }
    )
    print(f"{describe(environment())}; {len(ids)} images, batch {args.batch_size}, best of {args.repeats}")
    print_table(rows, ["stage", "queries/image", "images/s", "s per 1k images"])
    n = 2 * args.project
    attack_hours = sum(r["s per 1k images"] for r in rows if r["stage"].startswith("attack")) * n / 1000 / 3600
    train_hours = 8 * args.train_steps * seconds / 3600
    print(
        f"\nprojection, {args.project} members + {args.project} non-members at this image size: every attack above "
        f"{attack_hours:.1f} h; 8 LiRA references of {args.train_steps} steps {train_hours:.1f} h "
        f"(sum {attack_hours + train_hours:.1f} h on 1 process; scoring divides by the processes, references by "
        f"--jobs)"
    )


if __name__ == "__main__":
    main()
