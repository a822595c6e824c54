"""Shared fixtures: the tiny recipe and one trained tiny run per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

from diffmia.core.config import TargetConfig, load_config

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "tiny.yaml"
# small settings for the attacks whose defaults take long (the pixel and the text contract tests)
SMALL = {
    "rediffuse": {"repeats": 2, "steps": 3},
    "sd_mia": {"generations": 2, "steps": 3},
    "clid": {"timesteps": [440]},
    "lira": {"references": 2, "draws": 1},
    "rmia": {"references": 2, "draws": 1, "population": 40},
    "gsa": {"references": 2, "timesteps": 3, "trees": 20},
    "quantile_regression": {"statistic": "loss", "bags": 3, "epochs": 5},
    "sima": {"candidates": [10, 100]},
}


@pytest.fixture(scope="session", autouse=True)
def shared_cache(tmp_path_factory):
    """Reference models and public bases of the test session go to a fresh cache, never the user's."""
    import os

    old = os.environ.get("DIFFMIA_CACHE")
    os.environ["DIFFMIA_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    yield Path(os.environ["DIFFMIA_CACHE"])
    if old is None:
        os.environ.pop("DIFFMIA_CACHE", None)
    else:
        os.environ["DIFFMIA_CACHE"] = old


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
def short_run(tmp_path_factory) -> Path:
    """The tiny recipe at its own 20 steps: for reference-model bookkeeping and hand computations, where what the
    references learn does not matter and each of them then trains 10x faster than one of tiny_run's recipe."""
    from diffmia.targets.train import train_target

    out = tmp_path_factory.mktemp("runs") / "short"
    train_target(load_config(TINY), out, progress=False)
    return out


@pytest.fixture(scope="session")
def text_run(tmp_path_factory):
    """A tiny text-conditioned target (captioned digits, trained on every caption's paraphrases), loaded."""
    from diffmia.targets.runs import load_run
    from diffmia.targets.train import train_target

    out = tmp_path_factory.mktemp("t2i") / "run"
    train_target(load_config(REPO / "configs" / "tiny-t2i.yaml", ["train.steps=60"]), out, progress=False)
    return load_run(out)
