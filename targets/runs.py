"""Open a trained run directory: its config, split manifest (checked against the data) and Target."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from diffmia.core.config import TargetConfig, load_config
from diffmia.core.errors import DiffmiaError
from diffmia.core.rundir import RunDir

from .data import ImageSet, load_dataset
from .kinds import load_target
from .manifest import SplitManifest
from .target import Target


class RunError(DiffmiaError):
    pass


@dataclass
class LoadedRun:
    run: RunDir
    config: TargetConfig
    manifest: SplitManifest
    images: ImageSet
    target: Target

    @property
    def resolution(self) -> int:
        return self.config.data.resolution or self.images.native_resolution


def load_run(path: str | Path, device: str | None = None) -> LoadedRun:
    run = RunDir(path)
    if not run.root.is_dir():
        raise RunError(f"{run.root}: run directory not found")
    if not run.is_trained():
        recipes = sorted(str(r) for r in (run.root / "recipes").glob("*") if RunDir(r).is_trained())
        if recipes:  # a `diffmia run` results folder: its targets are one level down
            raise RunError(
                f"{run.root}: a `diffmia run` results folder; its trained targets are "
                + ", ".join(recipes[:8])
                + (" ..." if len(recipes) > 8 else "")
                + ": attack one of those"
            )
        raise RunError(f"{run.root}: no finished target here (train it with `diffmia train`, or --resume it)")
    cfg = load_config(run.config)
    manifest = SplitManifest.load(run.manifest)
    images = load_dataset(cfg.data)
    manifest.verify(images, source=str(run.manifest))
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    target = load_target(run.target, device)
    return LoadedRun(run, cfg, manifest, images, target)
