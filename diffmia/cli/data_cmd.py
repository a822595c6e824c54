"""`diffmia data`: the split manifest and image grids of a recipe's data."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from diffmia.cli.common import SetOption, app, out_path, user_errors


@app.command()
@user_errors
def data(
    config: Path = typer.Argument(..., help="Target recipe (YAML); only its data section and seed are used."),
    out: str = typer.Option(..., "--out", "-o", help="Folder for manifest.json and the member / non-member grids."),
    set_: Optional[List[str]] = SetOption,
) -> None:
    """Make the split manifest for a recipe and show its members and non-members as PNG grids."""
    from diffmia.core.config import load_config
    from diffmia.targets.data import load_dataset
    from diffmia.targets.images import grid_png
    from diffmia.targets.manifest import SplitManifest

    out = out_path(out)
    cfg = load_config(config, set_ or [])
    images = load_dataset(cfg.data)
    manifest = SplitManifest.for_recipe(images, cfg.data, cfg.seed)
    out.mkdir(parents=True, exist_ok=True)
    manifest.save(out / "manifest.json")
    for role in ("members", "nonmembers"):
        grid_png(
            images.tensor(manifest.indices(role)[:64], cfg.data.resolution), out / f"{role}.png", private=True
        )  # member (and non-member) images: owner-only
    counts = manifest.to_dict()["counts"]
    typer.echo(
        f"{images.name}: {len(images)} images -> {counts}; wrote {out / 'manifest.json'}, members.png, nonmembers.png"
    )
