"""Shared fixtures: the tiny recipe and one trained tiny run per test session."""
from __future__ import annotations

from pathlib import Path

import pytest

from diffmia.config import TargetConfig, load_config

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "tiny.yaml"


@pytest.fixture
def tiny_config() -> TargetConfig:
    return load_config(TINY)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A tiny target trained long enough (200 steps on 64 members) that members are fitted better."""
    from diffmia.targets.train import train_target

    out = tmp_path_factory.mktemp("runs") / "tiny"
    cfg = load_config(TINY, ["train.steps=200", "train.checkpoint_every=100"])
    train_target(cfg, out, progress=False)
    return out


@pytest.fixture(scope="session")
def text_run(tmp_path_factory):
    """A tiny text-conditioned target (captioned digits, trained on every caption's paraphrases), loaded."""
    from diffmia.targets.runs import load_run
    from diffmia.targets.train import train_target

    out = tmp_path_factory.mktemp("t2i") / "run"
    train_target(load_config(REPO / "configs" / "tiny-t2i.yaml", ["train.steps=60"]), out, progress=False)
    return load_run(out)
