"""`diffmia sample`: draw images from a trained target."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from diffmia.cli.common import app, out_path, user_errors


@app.command()
@user_errors
def sample(
    run: Path = typer.Argument(..., help="A trained run directory."),
    out: str = typer.Option("samples.png", "--out", "-o", help="PNG grid to write."),
    n: int = typer.Option(64, "--n", min=1, max=4096, help="Number of images."),
    steps: int = typer.Option(50, "--steps", min=1, max=1000, help="Denoising steps."),
    sampler: str = typer.Option("ddim", "--sampler", help="ddim (eta=0) or ddpm (ancestral)."),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of the initial noise."),
    prompt: Optional[List[str]] = typer.Option(
        None, "--prompt", "-p", help="Text targets: prompt(s), cycled over the n images."
    ),
    guidance: float = typer.Option(
        3.0, "--guidance", min=1.0, max=30.0, help="Text targets: classifier-free guidance scale."
    ),
) -> None:
    """Draw samples from a trained target and save them as a PNG grid."""
    import torch

    from diffmia.core.config import ConfigError
    from diffmia.targets.images import grid_png
    from diffmia.targets.runs import load_run

    out = out_path(out, file=True)
    if sampler not in ("ddim", "ddpm"):
        raise ConfigError(f"--sampler: expected ddim or ddpm, got {sampler!r}")
    loaded = load_run(run)
    if prompt and not loaded.target.conditional:
        raise ConfigError(f"--prompt: {run} is an unconditional target")
    prompts = [prompt[i % len(prompt)] for i in range(n)] if prompt else None
    images = loaded.target.generate(
        n, prompts, steps=steps, sampler=sampler, guidance_scale=guidance, generator=torch.Generator().manual_seed(seed)
    )
    typer.echo(f"wrote {grid_png(images, out)} ({n} images, {sampler}, {steps} steps)")
