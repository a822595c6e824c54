"""`diffmia attack`: score a run's members, non-members and canaries with one attack, or every gray-box one."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from diffmia.attacks import ATTACKS  # the names alone: no torch
from diffmia.cli.common import BatchSizeOption, SetOption, app, dotted_values, out_path, user_errors


@app.command()
@user_errors
def attack(
    run: Path = typer.Argument(..., help="A trained run directory."),
    attack_name: str = typer.Option(
        "all",
        "--attack",
        "-a",
        help="Attack name, or 'all' for every gray-box attack that "
        "fits the target and needs no reference models. Attacks: " + ", ".join(ATTACKS.names()) + ".",
    ),
    set_: Optional[List[str]] = SetOption,
    tune_: Optional[List[str]] = typer.Option(
        None, "--tune", help="Choose a parameter on the calibration split: --tune timestep=50,100,200 (repeatable)."
    ),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of the attack's noise draws."),
    batch_size: Optional[int] = BatchSizeOption,
    out: Optional[str] = typer.Option(None, "--out", "-o", help="Folder for the scores (default: RUN/scores)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
    precision: str = typer.Option(
        "fp32",
        "--precision",
        help="fp32 (exact), bf16 or fp16: the denoiser runs under "
        "autocast (faster on GPUs; scores within the README's stated tolerance).",
    ),
) -> None:
    """Score the run's members and non-members with an attack; write scores/NAME.csv and print test-half metrics.

    --set takes the attack's parameters, e.g. --set k=5 --set aggregation=centroid."""
    from diffmia.attacks import build_attack
    from diffmia.core.config import ConfigError, parse_override
    from diffmia.evaluate.metrics import auc, rates_at, threshold_for_fpr
    from diffmia.targets.runs import load_run

    out = out_path(out)
    params = dotted_values(set_)
    loaded = load_run(run)
    try:
        loaded.target.set_precision(precision)
    except ValueError as exc:
        raise ConfigError(f"--precision: {exc}") from None
    grid = {}
    for text in tune_ or []:
        keys, value = parse_override(text)
        values = value if isinstance(value, list) else [parse_override(f"x={v}")[1] for v in str(value).split(",")]
        grid[".".join(keys)] = values
    if attack_name == "all":  # every gray-box attack that fits the target (reference attacks train models: name them)
        names = [
            n
            for n in ATTACKS.names()
            if ATTACKS.get(n).access == "gray-box"
            and not ATTACKS.get(n).needs_references
            and (loaded.target.conditional or not ATTACKS.get(n).needs_captions)
        ]
        if params or grid:
            raise ConfigError("--set and --tune apply to one attack; name it with --attack")
    else:
        names = [attack_name]
    attacks = [build_attack(name, params, seed=seed) for name in names]  # validate all before any work
    from diffmia.attacks.runner import check_attack_fits
    from diffmia.attacks.tuning import check_grid, score_attack

    for atk in attacks + (check_grid(attack_name, params, grid, seed) if grid else []):
        check_attack_fits(loaded, atk)
    from diffmia.core.parallel import finish_processes, processes

    echo = typer.echo if processes()[1] == 0 else (lambda *a, **k: None)  # under a launcher: the main process speaks
    echo(
        f"{'attack':<20} {'AUC':>6} {'TPR@1%FPR':>10} {'(FPR)':>7} {'queries':>8} {'images':>7} {'seconds':>8}"
        "   (test halves; threshold fixed on the calibration halves)"
    )
    for atk in attacks:
        result = score_attack(
            loaded,
            atk.name,
            params,
            grid,
            seed,
            out,
            batch_size=batch_size,
            progress=progress,
            on_chosen=lambda chosen, name=atk.name: echo(f"{name}: chosen on the calibration split: {chosen}"),
        )
        if not result.info:  # a non-main process of a sharded run
            continue
        test = result.scores[result.scores.split == "test"]
        cal = result.scores[(result.scores.split == "calibration") & (result.scores.is_member == 0)]
        rates = rates_at(test.is_member, test.score, threshold_for_fpr(cal.score, 0.01))
        echo(
            f"{atk.name:<20} {auc(test.is_member, test.score):6.3f} {rates.tpr:10.3f} {rates.fpr:7.3f}"
            f" {result.info['queries_per_sample']:8d} {result.info['generations_per_sample']:7d} {result.info['seconds']:8.1f}"
        )
    echo(f"scores in {Path(out) if out else loaded.run.scores}")
    finish_processes()
