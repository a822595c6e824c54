"""Prediction types: a v- or sample-prediction model is attacked as the noise predictor it implies. The same trained
model seen through each parameterisation (its output re-expressed as v or as x0, the scheduler saying so) gives the
same noise predictions, images and attack scores; an unknown type is refused by name; each type trains."""

from types import SimpleNamespace

import pytest
import torch
from diffusers import DDPMScheduler

from diffmia.attacks import AttackBatch, build_attack
from diffmia.core.config import ConfigError, load_config
from diffmia.targets.kinds import load_target
from diffmia.targets.runs import load_run
from diffmia.targets.target import PixelDDPMTarget, PredictionTypeError, epsilon_from
from tests.conftest import TINY


class Reparameterised(torch.nn.Module):
    """An epsilon-prediction UNet whose output is re-expressed as v or x0: one model, another parameterisation."""

    def __init__(self, unet, alphas_cumprod, kind: str):
        super().__init__()
        self.unet, self.abar, self.kind = unet, alphas_cumprod.float(), kind
        self.config = unet.config

    def forward(self, x_t, t):
        eps = self.unet(x_t, t).sample
        a = self.abar[t.long().cpu()].to(eps.device).reshape(-1, 1, 1, 1)
        x0 = (x_t - (1 - a).sqrt() * eps) / a.sqrt()
        out = a.sqrt() * eps - (1 - a).sqrt() * x0 if self.kind == "v_prediction" else x0
        return SimpleNamespace(sample=out)


@pytest.fixture(scope="module")
def eps_run(short_run):
    return load_run(short_run)


def _seen_as(loaded, kind: str) -> PixelDDPMTarget:
    base = loaded.target
    scheduler = DDPMScheduler.from_config(base.noise_scheduler.config, prediction_type=kind)
    return PixelDDPMTarget(Reparameterised(base.unet, base.alphas_cumprod, kind), scheduler)


@pytest.mark.parametrize("kind", ["v_prediction", "sample"])
def test_the_same_model_through_each_parameterisation_gives_the_same_scores(eps_run, kind):
    base, other = eps_run.target, _seen_as(eps_run, kind)
    assert other.prediction_type == kind
    x = torch.randn(6, *base.sample_shape, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([1, 10, 100, 300, 600, 900])  # sample-prediction converts worst at t near 0
    assert torch.allclose(other.predict_noise(x, t), base.predict_noise(x, t), atol=2e-3, rtol=1e-3)
    ids = eps_run.manifest.indices("members")[:4] + eps_run.manifest.indices("nonmembers")[:4]
    batch = AttackBatch(eps_run.images.tensor(ids), ids)
    for name in ("naive_loss", "pia", "secmi", "noise_aggregation"):
        a = build_attack(name, seed=0).score(base, batch)
        b = build_attack(name, seed=0).score(other, batch)
        assert torch.allclose(torch.as_tensor(a), torch.as_tensor(b), rtol=1e-3, atol=1e-4), name
    gen = {"n": 2, "steps": 5, "generator": None}
    same = [m.generate(**{**gen, "generator": torch.Generator().manual_seed(1)}) for m in (base, other)]
    assert torch.allclose(same[0], same[1], atol=1e-3)  # the sampler is handed noise, whatever the model outputs


def test_conversions_invert_each_other():
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(4, 1, 8, 8, generator=g), torch.randn(4, 1, 8, 8, generator=g)
    a = torch.tensor([0.9, 0.5, 0.1, 0.01], dtype=torch.float64)
    ar = a.float().reshape(-1, 1, 1, 1)
    x_t = ar.sqrt() * x0 + (1 - ar).sqrt() * eps
    v = ar.sqrt() * eps - (1 - ar).sqrt() * x0
    assert torch.allclose(epsilon_from("v_prediction", v, x_t, a), eps, atol=1e-5)
    assert torch.allclose(epsilon_from("sample", x0, x_t, a), eps, atol=1e-4)
    assert epsilon_from("epsilon", eps, x_t, a) is eps


def test_an_unknown_prediction_type_is_refused_by_name(eps_run):
    scheduler = DDPMScheduler.from_config(eps_run.target.noise_scheduler.config, prediction_type="flow_prediction")
    with pytest.raises(PredictionTypeError, match="prediction_type 'flow_prediction' is not one diffmia converts"):
        PixelDDPMTarget(eps_run.target.unet, scheduler)
    with pytest.raises(ConfigError, match="model.prediction_type"):
        load_config(TINY, ["model.prediction_type=flow"])


@pytest.mark.parametrize("kind", ["v_prediction", "sample"])
def test_each_prediction_type_trains_and_loads(tmp_path, kind):
    from diffmia.targets.train import train_target

    out = tmp_path / kind
    train_target(load_config(TINY, [f"model.prediction_type={kind}", "train.steps=4"]), out, progress=False)
    target = load_target(out / "target")
    assert target.prediction_type == kind and target.noise_scheduler.config.prediction_type == kind
    x = torch.randn(2, *target.sample_shape)
    assert torch.isfinite(target.predict_noise(x, 50)).all()
