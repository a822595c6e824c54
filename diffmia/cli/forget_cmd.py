"""`diffmia forget`: the member data an audit left outside its folder."""

from __future__ import annotations

from pathlib import Path

import typer

from diffmia.cli.common import app, user_errors


@app.command()
@user_errors
def forget(
    results_dir: Path = typer.Argument(..., help="A folder written by `diffmia run` or `diffmia audit`."),
    yes: bool = typer.Option(False, "--yes", help="Remove without listing first."),
) -> None:
    """Remove the copies of member data an audit left outside its folder: the audited images cached for reference
    training and the reference models trained on them (other audits of the same images lose them too)."""
    import shutil

    from diffmia.forget import member_data_outside
    from diffmia.targets.runs import RunError

    if not (results_dir / "results.json").is_file():
        raise RunError(f"{results_dir}: no results.json here")
    paths = member_data_outside(results_dir)
    if not paths:
        typer.echo("nothing outside the folder to remove")
        return
    for path in paths:
        typer.echo(f"{'removing' if yes else 'would remove'} {path}")
        if yes:
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    if not yes:
        typer.echo("rerun with --yes to remove them")
