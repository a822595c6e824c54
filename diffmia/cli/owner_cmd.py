"""`diffmia owner`: the data owner's test, "was my collection used?"."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from diffmia.cli.common import AllowOutsideOption, app, out_path, user_errors


@app.command()
@user_errors
def owner(
    model: Path = typer.Argument(..., help="A local diffusers pipeline folder (the model in question)."),
    suspect: Path = typer.Option(..., "--suspect", "-s", help="The owner's collection (folder or CSV list)."),
    reference: Path = typer.Option(
        ..., "--reference", "-r", help="Images of the same kind known NOT to be in training (folder or CSV list)."
    ),
    attack_names: Optional[List[str]] = typer.Option(None, "--attack", "-a", help="Only these attacks (repeatable)."),
    out: Optional[str] = typer.Option(None, "--out", "-o", help="Results folder (default: runs/owner-MODELNAME)."),
    permutations: int = typer.Option(10000, "--permutations", min=100, max=1000000),
    seed: int = typer.Option(0, "--seed", min=0),
    allow_outside: bool = AllowOutsideOption,
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """The data owner's test: was the suspect collection used to train MODEL? A one-sided set-level test of
    "suspect scores higher than reference" on cross-fitted combinations of the gray-box attacks' scores."""
    from diffmia.owner import owner_test

    out = out_path(out) or Path("runs") / f"owner-{model.resolve().name}"
    r = owner_test(
        model,
        suspect,
        reference,
        out,
        seed,
        attack_names,
        permutations,
        progress=progress,
        allow_outside=allow_outside,
    )
    c = r["combined"]
    typer.echo(
        f"{r['suspect_images']} suspect vs {r['reference_images']} reference images, attacks: {', '.join(r['attacks'])}"
    )
    typer.echo(
        f"combined: permutation p = {c['permutation_p']:.3g}, Welch p = {c['welch_p']:.3g}, effect size d = "
        f"{c['effect_size_d']:.2f}; median p < 0.05 from {r['images_needed_median_p_0.05'] or 'more than all'} images"
    )
    b = r["blind_baseline"]
    typer.echo(
        f"blind baseline (the images alone, no model): permutation p = {b['permutation_p']:.3g}"
        + (": the two collections DIFFER IN DISTRIBUTION" if b["differ"] else ": not told apart")
    )
    typer.echo(f"verdict: {r['verdict']}")
    typer.echo(f"wrote {out / 'owner.json'} and {out / 'owner-size-curve.png'}")
