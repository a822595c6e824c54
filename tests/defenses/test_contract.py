"""Every registered defense through one contract, plus the properties each one promises."""

import json

import pytest
import torch
from safetensors.torch import load_file

from diffmia.core.config import ConfigError, load_config
from diffmia.defenses import DEFENSES, build_defenses
from diffmia.targets.runs import load_run
from diffmia.targets.train import train_target
from tests.conftest import TINY

# the smallest settings that make each defense do its work on the tiny recipe
PARAMS = {
    "dp_sgd": {"epsilon": 10.0},
    "input_perturbation": {"gamma": 0.1},
    "image_noise": {"std": 0.1},
    "dedup": {"mode": "exact"},
    "lora": {"rank": 2, "base_steps": 6},
    "public_base": {"base_steps": 6},
    "dual_model": {"mode": "distill", "teacher_steps": 6},
    "caption_randomisation": {"probability": 0.5, "mode": "tokens"},
    "text_embedding_noise": {"std": 0.2},
}
TEXT_ONLY = {"caption_randomisation", "text_embedding_noise"}


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DIFFMIA_CACHE", str(tmp_path / "cache"))


def test_every_defense_has_contract_params():
    assert set(DEFENSES.names()) == set(PARAMS), "add the new defense to PARAMS"


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_contract(tmp_path, name):
    check_defense_contract(tmp_path, name, PARAMS[name], text=name in TEXT_ONLY)


def check_defense_contract(tmp_path, name: str, params: dict, text: bool = False) -> None:
    """What every defense (built-in or plugin) must do: train the tiny recipe with 16 canaries, record itself, give a
    target that loads and answers, route the canaries like members, and train to the same weights twice."""
    entry = {"name": name, **params}
    recipe = TINY.with_name("tiny-t2i.yaml") if text else TINY
    cfg = load_config(
        recipe, [f"defenses=[{json.dumps(entry)}]", "train.steps=8", "train.checkpoint_every=4", "data.canaries=16"]
    )
    run = train_target(cfg, tmp_path / "run", progress=False)
    summary = json.loads(run.summary.read_text())
    manifest = json.loads(run.manifest.read_text())
    assert summary["defenses"][0]["name"] == name  # recorded in the summary and the manifest
    assert manifest["extra"]["defenses"][0]["name"] == name
    assert_canaries_trained_like_members(name, manifest["extra"])
    loaded = load_run(run.root)  # the target loads and answers queries
    out = loaded.target.predict_noise(
        torch.zeros(2, 1, 8, 8), 10, ["a digit"] * 2 if loaded.target.conditional else None
    )
    assert out.shape == (2, 1, 8, 8) and torch.isfinite(out).all()
    # deterministic: the same recipe twice gives the same weights
    again = train_target(cfg, tmp_path / "again", progress=False)
    a = load_file(run.target / "unet/diffusion_pytorch_model.safetensors")
    b = load_file(again.target / "unet/diffusion_pytorch_model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def assert_canaries_trained_like_members(name: str, extra: dict) -> None:
    """Every trained model saw exactly the IN canaries meant for it (the one-run audit needs them trained on)."""
    included = sorted(c["index"] for c in extra["canaries"] if c["included"])
    assert included, "the coin flips gave no IN canary"
    trained = extra["training_set"].get("canaries_trained")
    if name == "dual_model" and extra["dual_model"]["mode"] == "alternate":
        halves = extra["dual_model"]["canaries_trained_by_teacher"]  # the target is the two teachers
    else:
        removed = extra["training_set"].get("canaries_removed_by_defenses", [])
        assert sorted(trained + removed) == included and set(trained).isdisjoint(removed)
        if name == "dedup":  # said, canary by canary, and nothing else drops one
            assert removed == sorted(set(removed) & set(extra["dedup"]["removed_member_ids"]))
        else:
            assert removed == []
        halves = extra["dual_model"]["canaries_trained_by_teacher"] if name == "dual_model" else None
    if halves is not None:  # each teacher its own half of the IN canaries
        assert set(halves[0]).isdisjoint(halves[1]) and sorted(halves[0] + halves[1]) == included
        assert abs(len(halves[0]) - len(halves[1])) <= 1
    if name in ("lora", "public_base"):  # the fine-tune sees them, the public base does not
        from pathlib import Path

        base = json.loads((Path(extra["public_base"]["folder"]) / "manifest.json").read_text())
        assert "canaries_trained" not in base["extra"]["training_set"]
        assert base["extra"]["training_set"]["trained_on"] == "public"


@pytest.mark.parametrize(
    "entries, match",
    [
        ([{"name": "dp_sgdd", "epsilon": 1}], "entry 0: unknown defense 'dp_sgdd' \\(did you mean 'dp_sgd'\\?\\)"),
        ([{"name": "dp_sgd"}], "exactly one of epsilon or noise_multiplier"),
        ([{"name": "dp_sgd", "epsilon": 1, "noise_multiplier": 1}], "exactly one"),
        ([{"name": "image_noise", "stdd": 1}], "stdd: unknown key \\(did you mean 'std'\\?\\)"),
        ([{"name": "image_noise"}, {"name": "image_noise"}], "each defense may appear once"),
        ([{"epsilon": 1}], "needs a 'name'"),
    ],
)
def test_bad_defense_entries(entries, match):
    with pytest.raises(ConfigError, match=match):
        build_defenses(entries)


def test_bad_defense_in_a_recipe_names_the_file(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("defenses:\n  - name: lora\n    rankk: 3\n")
    with pytest.raises(ConfigError, match=f"{path}: defenses: entry 0: defense lora: rankk: unknown key"):
        load_config(path)


def _per_row_grads(model, x0, noise, t, scheduler):
    """Per-row gradients of the per-row loss, with torch.func (independent of opacus)."""
    from torch.func import functional_call, grad, vmap

    params = {k: v.detach() for k, v in model.named_parameters()}

    def loss(p, x, n, tt):
        xt = scheduler.add_noise(x[None], n[None], tt[None])
        pred = functional_call(model, p, (xt, tt[None])).sample
        return ((pred - n[None]) ** 2).mean()

    return vmap(grad(loss), in_dims=(None, 0, 0, 0))(params, x0, noise, t)


def test_noise_multiplicity_clips_per_example_not_per_row():
    """With K rows per example, each example's K gradients are averaged and THEN clipped to C."""
    from diffmia.core.config import ModelConfig, SchedulerConfig
    from diffmia.defenses.dp_sgd import DPSGDParams, PrivateTraining
    from diffmia.targets.models import build_scheduler, build_unet

    torch.manual_seed(0)
    # with attention, as in the default recipe: opacus' hooks get the layers after attention wrong
    model = build_unet(ModelConfig(block_out_channels=[8, 16], attention=[False, True], norm_num_groups=4), 8, 1)
    scheduler = build_scheduler(SchedulerConfig())
    B, K, C = 3, 4, 0.05
    x0 = torch.randn(B, 1, 8, 8).repeat_interleave(K, 0)
    noise = torch.randn(B * K, 1, 8, 8)
    t = torch.randint(0, 1000, (B * K,))
    expected = _per_row_grads(model, x0, noise, t, scheduler)  # before opacus touches the model
    names = [n for n, p in model.named_parameters()]

    params = DPSGDParams(noise_multiplier=0.0, max_grad_norm=C, noise_multiplicity=K)
    engine = PrivateTraining(params, model, torch.optim.SGD(model.parameters(), lr=1.0), 100, B, 10, 0)
    pred = engine.model(scheduler.add_noise(x0, noise, t), t).sample
    ((pred - noise) ** 2).flatten(1).mean(1).mean().backward()
    engine.average_rows(B)
    engine.optimizer.pre_step()  # clip per example, accumulate, (zero) noise, scale by 1/B

    flat = torch.cat([expected[n].flatten(1) for n in names], 1).view(B, K, -1)
    per_example = flat.mean(1)
    norms = per_example.norm(dim=1)
    assert (norms > C).all()  # the bound is active for every example
    clipped = per_example * (C / (norms + 1e-6)).clamp(max=1.0)[:, None]
    want = clipped.sum(0) / B
    got = torch.cat([p.grad.flatten() for p in model.parameters()])
    assert torch.allclose(got, want, rtol=1e-3, atol=1e-7)
    # the wrong way, clipping each of the B*K rows, gives a different (and K-times more sensitive) sum
    row_norms = flat.reshape(B * K, -1).norm(dim=1)
    per_row = (flat.reshape(B * K, -1) * (C / (row_norms + 1e-6)).clamp(max=1.0)[:, None]).sum(0) / B
    assert not torch.allclose(got, per_row, rtol=1e-2)
    assert clipped.norm(dim=1).max() <= C * (1 + 1e-4)


def test_dp_epsilon_is_honest_and_resume_matches(tmp_path):
    from opacus.accountants import RDPAccountant

    overrides = [
        "defenses=[{name: dp_sgd, noise_multiplier: 1.1, noise_multiplicity: 2}]",
        "train.steps=12",
        "train.checkpoint_every=5",
    ]
    cfg = load_config(TINY, overrides)
    straight = train_target(cfg, tmp_path / "a", progress=False)
    train_target(cfg, tmp_path / "b", progress=False, stop_after=7)
    resumed = train_target(cfg, tmp_path / "b", progress=False, resume=True)
    a = load_file(straight.target / "unet/diffusion_pytorch_model.safetensors")
    b = load_file(resumed.target / "unet/diffusion_pytorch_model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    info = json.loads(straight.summary.read_text())["defenses"][0]
    acc = RDPAccountant()
    for _ in range(12):
        acc.step(noise_multiplier=1.1, sample_rate=16 / 64)
    assert info["epsilon"] == pytest.approx(acc.get_epsilon(1e-5), rel=1e-3)
    assert json.loads(resumed.summary.read_text())["dp_epsilon"] == pytest.approx(info["epsilon"], rel=1e-3)


def test_dp_target_epsilon_is_met():
    from diffmia.core.config import ModelConfig
    from diffmia.defenses.dp_sgd import DPSGDParams, PrivateTraining
    from diffmia.targets.models import build_unet

    model = build_unet(ModelConfig(block_out_channels=[8, 16], norm_num_groups=4), 8, 1)
    engine = PrivateTraining(
        DPSGDParams(epsilon=2.0), model, torch.optim.SGD(model.parameters(), lr=0.1), 256, 64, 50, 0
    )
    engine.restore(50)
    assert engine.epsilon() == pytest.approx(2.0, abs=0.05)


def test_duplicates_and_dedup(tmp_path):
    dup = ["data.duplicates={fraction: 0.25, copies: 3, augment_std: 0.02}", "train.steps=4"]
    cfg = load_config(TINY, dup)
    run = train_target(cfg, tmp_path / "dup", progress=False)
    extra = json.loads(run.manifest.read_text())["extra"]
    assert extra["training_set"]["rows"] == 64 + 16 * 3 and len(extra["training_set"]["duplicated_members"]) == 16
    # near-duplicate dedup catches the noisy copies, exact dedup does not
    near = load_config(TINY, dup + ["defenses=[{name: dedup, mode: near, threshold: 0.95}]"])
    report = json.loads(train_target(near, tmp_path / "near", progress=False).manifest.read_text())["extra"]["dedup"]
    assert report["removed"] >= 48 and report["rows_after"] <= 64  # every noisy copy (and any near-twin) is gone
    exact = load_config(TINY, dup + ["defenses=[{name: dedup, mode: exact}]"])
    report = json.loads(train_target(exact, tmp_path / "exact", progress=False).manifest.read_text())["extra"]["dedup"]
    assert report["removed"] == 0


def test_lora_saves_adapter_and_trains_few_parameters(tmp_path):
    cfg = load_config(TINY, ["defenses=[{name: lora, rank: 2, base_steps: 6}]", "train.steps=6"])
    run = train_target(cfg, tmp_path / "run", progress=False)
    assert (run.root / "adapter" / "adapter_model.safetensors").is_file()
    extra = json.loads(run.manifest.read_text())["extra"]
    assert 0 < extra["lora"]["trainable_parameters"] < extra["lora"]["total_parameters"] / 5
    # the base is cached and reused by a second recipe with the same base
    bases = list((tmp_path / "cache").glob("public-base-*"))
    full = load_config(TINY, ["defenses=[{name: public_base, base_steps: 6}]", "train.steps=6"])
    train_target(full, tmp_path / "full", progress=False)
    assert list((tmp_path / "cache").glob("public-base-*")) == bases


def test_dual_model_alternates_between_teachers(tmp_path):
    from diffmia.targets.target import AlternatingUNet

    cfg = load_config(TINY, ["defenses=[{name: dual_model, mode: alternate, teacher_steps: 10}]", "data.canaries=16"])
    run = train_target(cfg, tmp_path / "run", progress=False)
    assert (run.target / "dual.json").is_file() and (run.target / "unet_b").is_dir()
    target = load_run(run.root).target
    assert isinstance(target.unet, AlternatingUNet)
    x = torch.randn(2, 1, 8, 8)
    a, b, a_again = (target.predict_noise(x, 50) for _ in range(3))
    assert torch.equal(a, a_again) and not torch.equal(a, b)  # two different teachers, in turn
    teachers = sorted((tmp_path / "cache").glob("dual-teachers-*/half-*/manifest.json"))
    assert len(teachers) == 2
    from diffmia.targets.manifest import SplitManifest
    from diffmia.targets.train import step_seed
    from diffmia.targets.trainset import member_half

    m = SplitManifest.load(run.manifest)
    halves = [set(member_half(m, 0, h, step_seed)) for h in (0, 1)]
    assert not (halves[0] & halves[1]) and halves[0] | halves[1] == set(m.indices("members"))
    assert_canaries_trained_like_members("dual_model", m.extra)  # DualMD's teachers train on their canaries too


def test_text_defenses_refuse_unconditional_targets(tmp_path):
    cfg = load_config(TINY, ["defenses=[{name: text_embedding_noise, std: 0.1}]"])
    with pytest.raises(ConfigError, match="acts on captions"):
        train_target(cfg, tmp_path / "run", progress=False)
