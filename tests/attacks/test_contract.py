"""Every registered attack runs through the same contract on a tiny trained target."""

import pytest
import torch

from diffmia.attacks import ATTACKS, AttackBatch, build_attack
from diffmia.core.config import ConfigError
from diffmia.core.registry import UnknownNameError
from diffmia.targets.runs import load_run
from tests.conftest import SMALL


@pytest.fixture(scope="module")
def loaded(short_run):  # the contract needs a trained target, not a fitted one: references train in seconds
    return load_run(short_run)


def batch_of(loaded, ids):
    return AttackBatch(loaded.images.tensor(ids), ids)


PIXEL_ATTACKS = [n for n in ATTACKS.names() if not ATTACKS.get(n).needs_captions]  # the rest: tests/targets/test_t2i.py


def test_text_only_attacks_are_few():
    assert set(ATTACKS.names()) - set(PIXEL_ATTACKS) == {"clid", "sd_mia"}


@pytest.mark.parametrize("name", PIXEL_ATTACKS)
def test_contract(loaded, name):
    check_attack_contract(loaded, name, SMALL.get(name))


def check_attack_contract(loaded, name: str, params: dict | None = None) -> None:
    """What every attack (built-in or plugin) must do on a trained target: finite scores, one per image, the queries
    it declares, the same scores whatever the batch split, and scores that depend on the images."""
    attack = build_attack(name, params, seed=3)
    assert attack.access in {"white-box", "gray-box", "black-box"} and attack.paper
    ids = loaded.manifest.indices("members")[:5] + loaded.manifest.indices("nonmembers")[:5]
    target = loaded.target
    attack.prepare(loaded, loaded.run.root / ".cache")  # references, public-split helpers, calibration tuning
    target.queries.reset()
    scores = attack.score(target, batch_of(loaded, ids))
    assert scores.shape == (10,) and scores.dtype == torch.float32 and torch.isfinite(scores).all()
    # the counted model calls equal the declared queries per sample
    assert target.queries.sample_queries == attack.queries_per_sample(target) * 10
    assert target.queries.generations == attack.generations_per_sample(target) * 10
    # same seed -> same scores, whatever the batch split
    again = torch.cat(
        [attack.score(target, batch_of(loaded, ids[:3])), attack.score(target, batch_of(loaded, ids[3:]))]
    )
    assert torch.allclose(scores, again, rtol=1e-5, atol=1e-6)
    # not constant: the attack actually looks at the images
    assert scores.std() > 0


def test_unknown_attack_and_parameter():
    with pytest.raises(UnknownNameError, match="did you mean 'secmi'"):
        build_attack("secmii")
    with pytest.raises(ConfigError, match="attack noise_aggregation: kk: unknown key \\(did you mean 'k'\\?\\)"):
        build_attack("noise_aggregation", {"kk": 3})
    with pytest.raises(ConfigError, match="aggregation"):
        build_attack("noise_aggregation", {"aggregation": "l3"})
    with pytest.raises(ConfigError, match="multiple of stride"):
        build_attack("secmi", {"timestep": 95, "stride": 10})


def test_walk_below_zero_is_refused(loaded):
    with pytest.raises(ConfigError, match="T=20 - \\(k-1\\)\\*stride = -20 < 0"):  # at build time, before any work
        build_attack("noise_aggregation", {"timestep": 20, "k": 5, "stride": 10})
    attack = build_attack("noise_aggregation", {"sigma": 0.02, "k": 5, "stride": 10})  # T from the schedule: at use
    with pytest.raises(ConfigError, match="< 0"):
        attack.score(loaded.target, batch_of(loaded, [0]))


def test_seed_changes_random_attacks_only(loaded):
    ids = loaded.manifest.indices("members")[:4]
    b = batch_of(loaded, ids)
    a0 = build_attack("naive_loss", seed=0).score(loaded.target, b)
    a1 = build_attack("naive_loss", seed=1).score(loaded.target, b)
    assert not torch.allclose(a0, a1)
    s0 = build_attack("secmi", seed=0).score(loaded.target, b)
    s1 = build_attack("secmi", seed=1).score(loaded.target, b)
    assert torch.equal(s0, s1)
