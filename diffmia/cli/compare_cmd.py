"""`diffmia compare`: every recipe's strongest attack against a baseline's, paired on the same test images."""

from __future__ import annotations

from pathlib import Path

import typer

from diffmia.cli.common import app, user_errors


@app.command()
@user_errors
def compare(
    results_dir: Path = typer.Argument(..., help="A folder written by `diffmia run` (holds results.json)."),
    baseline: str = typer.Option(..., "--baseline", "-b", help="The recipe every other recipe is compared with."),
    bootstrap: int = typer.Option(2000, "--bootstrap", min=100, max=100000, help="Paired bootstrap resamples."),
    seed: int = typer.Option(0, "--seed", min=0),
) -> None:
    """Paired comparison of every recipe with a baseline on the same test images: AUC and calibrated TPR@1%FPR
    differences of the strongest attacks with bootstrap intervals and p-values, the FID difference, a verdict.
    Writes compare-BASELINE.csv into the folder."""
    from diffmia.core.config import ConfigError
    from diffmia.core.io import read_json, write_text
    from diffmia.evaluate.compare import compare_recipes, comparison_lines
    from diffmia.targets.runs import RunError

    if not (results_dir / "results.json").is_file():
        raise RunError(f"{results_dir}: no results.json here; run `diffmia run CONFIG --out {results_dir}` first")
    try:
        frame = compare_recipes(results_dir, read_json(results_dir / "results.json"), baseline, bootstrap, seed)
    except (KeyError, ValueError) as exc:
        raise ConfigError(str(exc).strip("'\"")) from None
    for line in comparison_lines(frame):
        typer.echo(line)
    path = results_dir / f"compare-{baseline}.csv"
    write_text(path, frame.to_csv(index=False))
    typer.echo(f"wrote {path}")
