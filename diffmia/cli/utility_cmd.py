"""`diffmia utility`: FID and KID of a target's samples beside the real-vs-real floor."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from diffmia.cli.common import app, dotted_values, out_path, user_errors


@app.command()
@user_errors
def utility(
    run: Path = typer.Argument(..., help="A trained run directory."),
    out: Optional[str] = typer.Option(None, "--out", "-o", help="JSON to write (default: RUN/utility.json)."),
    set_: Optional[List[str]] = typer.Option(
        None,
        "--set",
        "-s",
        help="A utility setting as KEY=VALUE, e.g. samples=1024, features=clip, features_path=DIR (repeatable).",
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """FID and KID of the target's samples against its held-out non-members, beside the floor (members against the
    same non-members). Under torchrun / accelerate launch each process draws every N-th batch of samples: the same
    images, hence the same numbers, as one process."""
    from diffmia.core.config import validate
    from diffmia.core.io import write_json
    from diffmia.core.parallel import finish_processes, processes
    from diffmia.core.rundir import default_cache_dir
    from diffmia.evaluate.fid import UtilityConfig, compute_utility
    from diffmia.targets.runs import load_run

    target_file = out_path(out, file=True) or run / "utility.json"
    cfg = validate(dotted_values(set_), UtilityConfig, source="--set")
    loaded = load_run(run)
    result = compute_utility(loaded, cfg, default_cache_dir(), progress=progress)
    if processes()[1] == 0:
        write_json(target_file, {**result, "run": str(run), "utility": cfg.model_dump(mode="json")})
        typer.echo(
            f"{result['fid_label']}: {result['fid']:.3f} (floor {result['fid_floor']:.3f}), KID "
            f"{result['kid']:.4f} (floor {result['kid_floor']:.4f}); {cfg.samples} samples, "
            f"{result['reference']} non-members -> {target_file}"
        )
    finish_processes()
