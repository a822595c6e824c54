"""`diffmia run`: the benchmark matrix (every recipe x every attack, FID, results, report)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from diffmia.cli.common import (
    FailIfOption,
    GateBoundOption,
    SetOption,
    SlurmOption,
    app,
    apply_gates,
    dotted_values,
    out_path,
    parse_gates,
    refuse_launch,
    user_errors,
)


@app.command()
@user_errors
def run(
    config: Path = typer.Argument(..., help="Benchmark config (YAML): recipes x attacks, utility, evaluation."),
    out: Optional[str] = typer.Option(None, "--out", "-o", help="Results folder (default: runs/NAME)."),
    set_: Optional[List[str]] = SetOption,
    show_examples: bool = typer.Option(
        False, "--show-examples", help="Embed the most exposed member images in the report."
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
    only: Optional[List[str]] = typer.Option(
        None,
        "--only",
        help="Run only this recipe (repeatable); results and report "
        "then cover only these. Rerun without it to collect every cached recipe.",
    ),
    executor: str = typer.Option(
        "inline",
        "--executor",
        help="inline (this process), local (one process per recipe, "
        "submitit's local executor) or slurm (one Slurm job per recipe through submitit; "
        "--slurm key=value sets its parameters).",
    ),
    slurm: Optional[List[str]] = SlurmOption,
    fail_if: Optional[List[str]] = FailIfOption,
    gate_bound: str = GateBoundOption,
) -> None:
    """Train every recipe, run every attack, measure FID, and write results.csv/json, plots and report.html.

    Finished cells are cached by a hash of their config: rerun the same command to resume after a kill."""
    from diffmia import api

    gates = parse_gates(fail_if, gate_bound)
    refuse_launch(
        "run",
        "launch its stages instead (diffmia train / attack / utility), or spread the recipes with "
        "--executor local|slurm and the references with --jobs",
    )
    results = api.run(
        config,
        out_path(out),
        set_ or [],
        only,
        show_examples,
        executor,
        dotted_values(slurm),
        progress=progress,
    )
    out, report = results.folder, results.report
    typer.echo(f"results: {out / 'results.csv'}")
    typer.echo(f"report: {report}")
    apply_gates(results.data, gates, gate_bound)
