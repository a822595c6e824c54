"""`diffmia run`: the benchmark matrix (every recipe x every attack, FID, results, report)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from diffmia.cli.common import SetOption, app, dotted_values, out_path, refuse_launch, user_errors


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
    slurm: Optional[List[str]] = typer.Option(
        None,
        "--slurm",
        help="submitit Slurm parameter, e.g. --slurm slurm_partition=gpu --slurm gpus_per_node=1 (repeatable).",
    ),
) -> None:
    """Train every recipe, run every attack, measure FID, and write results.csv/json, plots and report.html.

    Finished cells are cached by a hash of their config: rerun the same command to resume after a kill."""
    from diffmia.core.config import ConfigError
    from diffmia.evaluate.report import write_report
    from diffmia.matrix import load_benchmark, run_matrix

    refuse_launch(
        "run",
        "launch its stages instead (diffmia train / attack / utility), or spread the recipes with "
        "--executor local|slurm and the references with --jobs",
    )
    out = out_path(out)
    bench, recipes = load_benchmark(config, set_ or [])
    if only:
        unknown = sorted(set(only) - set(recipes))
        if unknown:
            raise ConfigError(f"--only: {config} has no recipe {', '.join(unknown)}; it has {', '.join(recipes)}")
        bench = bench.model_copy(update={"recipes": [r for r in bench.recipes if r.name in only]})
    out = out or Path("runs") / bench.name
    if executor not in ("inline", "local", "slurm"):
        raise ConfigError(f"--executor: expected inline, local or slurm, got {executor!r}")
    if executor != "inline":
        from diffmia.core.io import write_json
        from diffmia.executor import submit

        params = dotted_values(slurm)
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "benchmark.json", bench.model_dump(mode="json"))
        pending = [r.name for r in bench.recipes]
        submit(config, list(set_ or []), pending, out, executor, log=typer.echo, slurm=params)
        typer.echo("all jobs done; collecting the cached cells")
    results = run_matrix(bench, recipes, out, progress=progress, log=typer.echo)
    report = write_report(out, results, show_examples=show_examples) if show_examples else results["report"]
    typer.echo(f"results: {out / 'results.csv'}")
    typer.echo(f"report: {report}")
