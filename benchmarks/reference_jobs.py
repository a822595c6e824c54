"""Is `diffmia --jobs 2` faster than one process for training reference models on this machine?

Trains the same recipe (default: configs/digits-ddpm.yaml at --steps) three ways, one after the other, each alone:
one training with all threads; one training with 1 thread; `--jobs` trainings at once, each with threads/jobs threads
(what `diffmia --jobs J` does with the references). Prints seconds per step of one training and the references
finished per hour, from wall-clock time of the `diffmia train` processes (imports and saving included, as in a real
reference training), and the seconds per step of the training loop alone (summary.json).

    python benchmarks/reference_jobs.py --steps 300
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import REPO, print_table

from diffmia.core.parallel import usable_cpus


def trainings(n: int, threads: int, steps: int, config: Path, extra: list[str], work: Path) -> tuple[float, float]:
    """(wall-clock seconds of `n` `diffmia train` processes started at once with `threads` threads each, the mean
    seconds of their training loops as their summary.json records them)."""
    procs = []
    outs = [work / f"t{threads}-n{n}-{i}" for i in range(n)]
    t0 = time.perf_counter()
    for i, out in enumerate(outs):
        cmd = [
            sys.executable,
            "-m",
            "diffmia",
            "--threads",
            str(threads),
            "train",
            str(config),
            "--out",
            str(out),
            "--no-progress",
            "--set",
            f"train.steps={steps}",
            "--set",
            f"seed={i}",
        ]
        for s in extra:
            cmd += ["--set", s]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
    for p in procs:
        _, err = p.communicate()
        if p.returncode:
            raise SystemExit(f"diffmia train failed ({p.returncode}):\n{err[-2000:]}")
    wall = time.perf_counter() - t0
    loops = [json.loads((out / "summary.json").read_text())["train_seconds_this_session"] for out in outs]
    return wall, sum(loops) / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--config", type=Path, default=REPO / "configs" / "digits-ddpm.yaml")
    ap.add_argument("--set", action="append", default=[], help="extra config override, repeatable")
    args = ap.parse_args()
    cpus = usable_cpus()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for label, n, threads in [
            (f"1 training, {cpus} threads", 1, cpus),
            ("1 training, 1 thread", 1, 1),
            (f"{args.jobs} at once, {max(cpus // args.jobs, 1)} thread(s) each", args.jobs, max(cpus // args.jobs, 1)),
        ]:
            seconds, loop = trainings(n, threads, args.steps, args.config, args.set, work)
            rows.append(
                {
                    "how": label,
                    "wall_s": round(seconds, 1),
                    "loop_s_per_step_each": loop / args.steps,
                    "references_per_hour_at_these_steps": round(3600 * n / seconds, 1),
                }
            )
    base = rows[0]["references_per_hour_at_these_steps"]
    for r in rows:
        r["vs_one_process"] = f"{r['references_per_hour_at_these_steps'] / base:.2f}x"
    print(f"{args.config.name}, {args.steps} steps, {cpus} usable CPUs, pid {os.getpid()}")
    print_table(rows, ["how", "wall_s", "loop_s_per_step_each", "references_per_hour_at_these_steps", "vs_one_process"])


if __name__ == "__main__":
    main()
