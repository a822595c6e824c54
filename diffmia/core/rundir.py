"""The layout of a run directory: one place that names every file a run writes."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RunDir:
    root: Path

    def __init__(self, root: str | Path):
        object.__setattr__(self, "root", Path(root))

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.json"

    @property
    def target(self) -> Path:
        return self.root / "target"

    @property
    def train_log(self) -> Path:
        return self.root / "train_log.jsonl"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def summary(self) -> Path:
        return self.root / "summary.json"

    @property
    def scores(self) -> Path:
        return self.root / "scores"

    def is_trained(self) -> bool:
        saved = (self.target / "model_index.json").is_file() or (self.target / "diffmia-adapter.json").is_file()
        return saved and self.summary.is_file()


def default_cache_dir() -> Path:
    """Where shared helpers (public base models, feature networks, reference models) are cached: $DIFFMIA_CACHE or
    ~/.cache/diffmia."""
    return Path(os.environ.get("DIFFMIA_CACHE") or Path.home() / ".cache" / "diffmia")
