"""`diffmia train`: train one target from a recipe."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from diffmia.cli.common import SetOption, app, out_path, user_errors


@app.command()
@user_errors
def train(
    config: Path = typer.Argument(..., help="Target recipe (YAML), e.g. configs/digits-ddpm.yaml."),
    out: str = typer.Option(..., "--out", "-o", help="Run directory to write (target, manifest, log, checkpoints)."),
    set_: Optional[List[str]] = SetOption,
    resume: bool = typer.Option(False, "--resume", help="Continue from the latest checkpoint in --out."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Train a target: split the data, train with accelerate, save the target and the member/non-member loss gap."""
    from diffmia.core.config import load_config
    from diffmia.core.io import read_json
    from diffmia.targets.train import train_target

    out = out_path(out)
    cfg = load_config(config, set_ or [])
    try:
        run = train_target(cfg, out, resume=resume, progress=progress)
    except KeyboardInterrupt:
        from diffmia.core.rundir import RunDir
        from diffmia.targets.train import latest_checkpoint

        last = latest_checkpoint(RunDir(out))
        where = f"the last checkpoint is {last}" if last else "no checkpoint was written yet"
        typer.echo(
            f"\ninterrupted: {where}. Resume with: diffmia train {config} --out {out} --resume"
            + "".join(f" --set {s_!r}" for s_ in set_ or []),
            err=True,
        )
        raise typer.Exit(130) from None
    from diffmia.core.parallel import finish_processes, processes

    if processes()[1] != 0:  # under torchrun / accelerate launch: the main process reports
        finish_processes()
        return
    summary = read_json(run.summary)
    typer.echo(f"target: {run.target}")
    for t, row in (summary.get("gap") or {}).items():
        typer.echo(
            f"  t={t:>4}: loss members {row['members']:.4f}  non-members {row['nonmembers_test']:.4f}  ratio {row['ratio']:.2f}"
        )
    finish_processes()
