"""Reference models, the reference-model attacks (LiRA, RMIA, GSA), quantile regression, SimA, calibration tuning,
canaries and the one-run epsilon audit, each against a computation written here by hand."""

import math

import numpy as np
import pytest
import torch
from scipy.stats import binom

from diffmia.attacks import AttackBatch, build_attack
from diffmia.attacks.base import per_sample_noise
from diffmia.attacks.rmia import rmia_scores
from diffmia.attacks.runner import run_attack
from diffmia.attacks.tuning import tune
from diffmia.core import parallel
from diffmia.core.config import ConfigError, load_config
from diffmia.core.logs import captured
from diffmia.evaluate.audit import epsilon_lower_bound, guess_grid, one_run_audit, p_value
from diffmia.targets.references import pool_indices, reference_models
from diffmia.targets.runs import load_run
from diffmia.targets.train import train_target
from tests.conftest import TINY


@pytest.fixture(scope="module")
def loaded(tiny_run):
    return load_run(tiny_run)


@pytest.fixture(scope="module")
def short(short_run):
    """A 20-step recipe: its references train in seconds (bookkeeping and hand computations need no fitted model)."""
    return load_run(short_run)


def test_online_references_are_balanced_and_cached(short):
    refs = reference_models(short, 4, "online", seed=5)
    pool = pool_indices(short.manifest)
    is_in = refs.is_in(pool)
    assert (is_in.sum(0) == 2).all()  # every pool image IN exactly N/2 references
    assert all(len(m) == len(pool) // 2 for m in refs.members)
    assert (is_in[0] ^ is_in[1]).all() and (is_in[2] ^ is_in[3]).all()  # complementary pairs
    again = reference_models(short, 4, "online", seed=5)
    assert again.cached == 4 and again.trained_seconds == 0 and again.folders == refs.folders
    # a reference is the same recipe on another subset: its manifest's members are the subset
    import json

    manifest = json.loads((refs.folders[0] / "manifest.json").read_text())
    assert sorted(e["index"] for e in manifest["members"]) == refs.members[0].tolist()
    with pytest.raises(ConfigError, match="must be even"):
        build_attack("lira", {"references": 3})


def test_offline_references_never_see_an_audited_image(short):
    refs = reference_models(short, 2, "offline", seed=5)
    assert not refs.is_in(pool_indices(short.manifest)).any()
    public = set(short.manifest.indices("public"))
    assert all(set(m.tolist()) <= public and len(m) == len(short.manifest.members) for m in refs.members)


def _phi(model, loaded, ids, t=100, draws=2, seed=0):
    """LiRA's statistic from the raw UNet: mean over draws of log ||eps - eps_theta(x_t, t)||^2 / D."""
    x0 = loaded.images.tensor(ids).double()
    abar = model.noise_scheduler.alphas_cumprod.double()[t]
    unet = model.unet.double()
    vals = []
    for d in range(draws):
        eps = per_sample_noise(ids, x0.shape[1:], seed, d).double()
        with torch.no_grad():
            pred = unet(abar.sqrt() * x0 + (1 - abar).sqrt() * eps, torch.full((len(ids),), t)).sample
        vals.append(torch.log(((pred - eps) ** 2).flatten(1).mean(1)))
    unet.float()
    return torch.stack(vals).mean(0).numpy()


@pytest.mark.parametrize("mode", ["online", "offline"])
def test_lira_against_a_hand_computation(short, mode):
    attack = build_attack("lira", {"references": 2, "draws": 2, "mode": mode})
    attack.prepare(short, None)
    ids = short.manifest.indices("members")[:3] + short.manifest.indices("nonmembers")[:3]
    pool = pool_indices(short.manifest)
    refs = attack.refs
    stats = np.stack([_phi(ref, short, pool) for ref in refs.targets()])
    is_in = refs.is_in(pool)
    k = [pool.index(i) for i in ids]
    phi = _phi(short.target, short, ids)
    s_out = np.std(stats[~is_in])
    mu_out = np.array([np.median(stats[~is_in[:, j], j]) for j in k])
    if mode == "offline":
        ref = (mu_out - phi) / s_out
    else:
        s_in = s_out = np.std(stats[is_in])  # the official fix_variance: the IN values' deviation for both
        mu_in = np.array([np.median(stats[is_in[:, j], j]) for j in k])
        ref = (-0.5 * ((phi - mu_in) / s_in) ** 2 - np.log(s_in)) - (
            -0.5 * ((phi - mu_out) / s_out) ** 2 - np.log(s_out)
        )
    out = attack.score(short.target, AttackBatch(short.images.tensor(ids), ids)).numpy()
    assert np.allclose(out, ref, rtol=1e-3, atol=1e-3), (out, ref)
    info = attack.extra_info()
    assert info["references"]["count"] == 2 and info["reference_queries"] == 2 * 2 * len(pool)


def test_rmia_fraction_of_population_dominated():
    # one reference, online (Pr(x) = its signal), one draw: LR(x, z) = (t_x / r_x) / (t_z / r_z) > gamma
    ratio_z = np.array([0.5, 1.0, 2.0, 4.0])
    t_z, r_z = ratio_z[:, None], np.ones((1, 4, 1))
    t_x = np.array([2.0, 8.0, 0.1, 1.0])[:, None]
    r_x = np.ones((1, 4, 1))
    out = rmia_scores(t_x, r_x, np.ones((1, 4), bool), t_z, r_z, np.ones((1, 4), bool), False, 0.0, 2.0, 0.0)
    assert list(out) == [0.25, 0.75, 0.0, 0.0]  # strict: 2.0 / 1.0 = 2 is not > 2
    assert list(
        rmia_scores(t_x[3:], r_x[:, 3:], np.ones((1, 1), bool), t_z, r_z, np.ones((1, 4), bool), False, 0.0, 1.0, 0.0)
    ) == [0.25]


def test_rmia_scores_from_references(short):
    attack = build_attack("rmia", {"references": 2, "draws": 2})
    attack.prepare(short, None)
    assert 0.0 <= attack.a <= 1.0 and attack.params.gamma == 2.0 and attack.params.proportiontocut == 0.2
    # the whole public split is the population, less the points IN both offline references
    public = short.manifest.indices("public")
    both_in = attack.refs.is_in(public).all(0).sum()
    assert len(attack.population) == len(public) - both_in and attack.extra_info()["signal"] == "rank"
    ids = short.manifest.indices("members")[:4] + short.manifest.indices("nonmembers")[:4]
    scores = attack.score(short.target, AttackBatch(short.images.tensor(ids), ids))
    assert ((scores >= 0) & (scores <= 1)).all()


def test_rmia_rank_signal_ignores_the_loss_scale(short, monkeypatch):
    """Any monotone transform of the losses (here x10 and squared) leaves every RMIA score unchanged."""
    from diffmia.attacks import rmia as rmia_module

    ids = short.manifest.indices("members")[:6] + short.manifest.indices("nonmembers")[:6]
    batch = AttackBatch(short.images.tensor(ids), ids)
    results = []
    for transform in (lambda v: v, lambda v: 10 * v, lambda v: v**2):
        original = rmia_module.denoising_losses
        monkeypatch.setattr(rmia_module, "denoising_losses", lambda *a, f=transform, o=original, **k: f(o(*a, **k)))
        attack = build_attack("rmia", {"references": 2, "draws": 1, "a": 0.3})
        attack.prepare(short, None)
        results.append(attack.score(short.target, batch))
        monkeypatch.setattr(rmia_module, "denoising_losses", original)
    assert torch.equal(results[0], results[1]) and torch.equal(results[0], results[2])
    with pytest.raises(ConfigError, match="signal exp needs an explicit tau"):
        build_attack("rmia", {"signal": "exp"})


def _official_get_rmia_out_signals(all_signals, all_memberships, target_model_idx, num_reference_models):
    """ml_privacy_meter attacks.py get_rmia_out_signals, written out again here."""
    paired = target_model_idx + 1 if target_model_idx % 2 == 0 else target_model_idx - 1
    columns = [i for i in range(all_signals.shape[1]) if i not in (target_model_idx, paired)][
        : 2 * num_reference_models
    ]
    out_signals = all_signals[:, columns] * ~all_memberships[:, columns]
    return -np.sort(-out_signals, axis=1)[:, :num_reference_models]


def _official_run_rmia(
    target_model_idx, all_signals, population_signals, all_memberships, num_reference_models, offline_a
):
    """ml_privacy_meter attacks.py run_rmia, written out again here."""
    target_signals = all_signals[:, target_model_idx]
    mean_x = (1 + offline_a) / 2 * _official_get_rmia_out_signals(
        all_signals, all_memberships, target_model_idx, num_reference_models
    ).mean(1) + (1 - offline_a) / 2
    prob_ratio_x = target_signals.ravel() / mean_x
    z_signals = population_signals[:, target_model_idx]
    mean_z = (1 + offline_a) / 2 * _official_get_rmia_out_signals(
        population_signals, np.zeros_like(population_signals, bool), target_model_idx, num_reference_models
    ).mean(1) + (1 - offline_a) / 2
    prob_ratio_z = z_signals.ravel() / mean_z
    return np.average(prob_ratio_x[:, None] / prob_ratio_z > 1.0, axis=1)


def test_rmia_equals_the_official_run_rmia():
    """On fixed signals (probabilities), offline, one draw, gamma 1 and a plain mean (the official run_rmia's
    settings): the project's rmia_scores equals ml_privacy_meter's run_rmia. Models: column 0 the target, 1 its pair,
    2..2k+1 the references, each x OUT of exactly k of them. run_rmia keeps the k largest OUT signals of each point:
    all k of an x, and of a population point (OUT of all 2k) its k largest, which the mask given here mirrors."""
    rng = np.random.default_rng(0)
    n_x, n_z, k = 40, 30, 2
    models = 2 + 2 * k
    signals = rng.uniform(0.01, 1.0, (n_x, models))
    population = rng.uniform(0.01, 1.0, (n_z, models))
    memberships = np.zeros((n_x, models), bool)
    for i in range(n_x):  # IN exactly k of the 2k references
        memberships[i, 2 + rng.permutation(2 * k)[:k]] = True
    for a in (0.0, 0.3, 1.0):
        official = _official_run_rmia(0, signals, population, memberships, k, a)
        refs = slice(2, models)
        largest = np.argsort(-population[:, refs], axis=1)[:, :k]
        out_z = np.zeros((2 * k, n_z), bool)
        out_z[largest.T, np.arange(n_z)] = True
        ours = rmia_scores(
            signals[:, :1],
            signals[:, refs].T[..., None],
            ~memberships[:, refs].T,
            population[:, :1],
            population[:, refs].T[..., None],
            out_z,
            True,
            a,
            1.0,
            0.0,
        )
        assert np.array_equal(ours, official)


def test_rmia_trimmed_mean_is_scipys():
    from scipy.stats import trim_mean

    from diffmia.attacks.rmia import trimmed_mean

    values = np.random.default_rng(1).standard_normal((10, 7, 3))
    assert np.allclose(trimmed_mean(values, np.ones((10, 7), bool), 0.2), trim_mean(values, 0.2, axis=0))
    keep = np.random.default_rng(2).random((10, 7)) < 0.6
    for j in range(7):
        assert np.allclose(trimmed_mean(values, keep, 0.2)[j], trim_mean(values[keep[:, j], j], 0.2, axis=0))


@pytest.mark.parametrize("head", ["gaussian", "quantiles"])
def test_quantile_regression_targets_its_false_positive_rate(loaded, head):
    small = {"statistic": "loss", "alpha": 0.1, "bags": 3, "epochs": 20, "width": 16, "head": head}
    attack = build_attack("quantile_regression", small)
    attack.prepare(loaded, None)
    info = attack.extra_info()
    assert info["held_out_public"] >= 100
    # held-out public images (never trained on) flagged at the level-alpha threshold: about alpha (measured 0.096 and
    # 0.102 on 334 held-out images)
    assert abs(info["held_out_fpr"]["0.1"] - 0.1) < 0.05, info
    assert attack.queries_per_sample(loaded.target) == 1
    if head == "gaussian":  # seeded: the same scores again
        ids = loaded.manifest.indices("members")[:5]
        again = build_attack("quantile_regression", small)
        again.prepare(loaded, None)
        batch = AttackBatch(loaded.images.tensor(ids), ids)
        assert torch.equal(attack.score(loaded.target, batch), again.score(loaded.target, batch))
    secmi = build_attack("quantile_regression")
    assert secmi.queries_per_sample(loaded.target) == 11  # SecMI's t-error by default, as in the paper


def _official_get_rates(private_target_scores, public_target_scores, private_thresholds, public_thresholds):
    """amazon-science/quantile-mia analysis_utils.get_rates (TPR and TNR per threshold column), written out again."""
    tp = (private_target_scores.reshape([-1, 1]) >= private_thresholds).sum(0)
    fn = (private_target_scores.reshape([-1, 1]) < private_thresholds).sum(0)
    tn = (public_target_scores.reshape([-1, 1]) < public_thresholds).sum(0)
    fp = (public_target_scores.reshape([-1, 1]) >= public_thresholds).sum(0)
    return tp / (tp + fn), tn / (tn + fp)


def test_quantile_regression_level_scores_are_the_official_rate_sweep():
    """QMIA's ROC sweeps the quantile level: at level tau_j an image is flagged iff its score reaches its own
    predicted threshold q_j(x). Thresholding the project's one level score at each tau_j gives the same TPR and TNR
    as get_rates on the per-image thresholds, for the Gaussian head (q = mu + sigma * sqrt(2) erfinv(2 tau - 1), the
    official plot_results) and for the quantile head (sorted thresholds)."""
    from scipy.special import erfinv

    from diffmia.attacks.quantile_regression import (
        gaussian_level_scores,
        majority_vote,
        quantile_level_scores,
        quantile_levels,
    )

    rng = np.random.default_rng(0)
    levels = quantile_levels(12)
    private_s, public_s = rng.normal(0.8, 1, 60), rng.normal(0, 1, 70)
    for s_private, s_public in [(private_s, public_s)]:
        mu = rng.normal(0, 0.3, 130)
        log_std = rng.normal(0, 0.2, 130)
        z = np.sqrt(2) * erfinv(2 * levels - 1)
        thresholds = mu[:, None] + np.exp(log_std)[:, None] * z[None]
        tpr, tnr = _official_get_rates(s_private, s_public, thresholds[:60], thresholds[60:])
        ours = gaussian_level_scores(np.concatenate([s_private, s_public]), mu, log_std)
        assert np.allclose([np.mean(ours[:60] >= zj) for zj in z], tpr)
        assert np.allclose([np.mean(ours[60:] < zj) for zj in z], tnr)
        raw = np.sort(rng.normal(0, 1, (130, 12)), axis=1)  # a quantile head's predictions, rearranged
        tpr, tnr = _official_get_rates(s_private, s_public, raw[:60], raw[60:])
        ours = quantile_level_scores(np.concatenate([s_private, s_public]), raw, levels)
        assert np.allclose([np.mean(ours[:60] >= t) for t in levels], tpr)
        assert np.allclose([np.mean(ours[60:] < t) for t in levels], tnr)
    # the bag's majority vote: at every threshold, a strict majority of the bags flag the image
    bags = rng.normal(0, 1, (5, 40))
    vote = majority_vote(bags)
    for threshold in np.linspace(-2, 2, 41):
        assert np.array_equal(vote >= threshold, (bags >= threshold).sum(0) > 2.5)
    even = rng.normal(0, 1, (4, 40))
    assert np.array_equal(majority_vote(even) >= 0.1, (even >= 0.1).sum(0) > 2)


def test_gsa_gradient_norms_by_hand(loaded):
    from diffmia.attacks.gsa import gradient_norms

    target = loaded.target
    ids = loaded.manifest.indices("members")[:2]
    x0 = loaded.images.tensor(ids)
    steps = [99, 499]
    noises = torch.stack([per_sample_noise(ids, x0.shape[1:], 0, d) for d in range(2)])
    out = gradient_norms(target, x0, steps, noises, per_timestep=False)
    unet = target.unet
    params = list(unet.parameters())
    abar = target.alphas_cumprod[torch.tensor(steps)].float().view(-1, 1, 1, 1)
    x_t = abar.sqrt() * x0[1:2] + (1 - abar).sqrt() * noises[:, 1]
    loss = ((unet(x_t, torch.tensor(steps)).sample - noises[:, 1]) ** 2).flatten(1).mean(1).mean()
    grads = torch.autograd.grad(loss, params)
    ref = torch.stack([torch.norm(g.double()) for g in grads])  # the official code's torch.norm(p.grad)
    assert out.shape == (2, len(params)) and torch.allclose(out[1], ref, rtol=1e-4)
    assert not any(p.grad is not None for p in params)
    # GSA2: the mean over timesteps of each timestep's norms (not of squared norms)
    per_t = gradient_norms(target, x0, steps, noises, per_timestep=True)
    each = []
    for k in range(len(steps)):
        loss_k = ((unet(x_t[k : k + 1], torch.tensor(steps[k : k + 1])).sample - noises[k, 1]) ** 2).mean()
        each.append(torch.stack([torch.norm(g.double()) for g in torch.autograd.grad(loss_k, params)]))
    assert torch.allclose(per_t[1], torch.stack(each).mean(0), rtol=1e-4)


def test_sima_by_hand_and_tuned_on_calibration_only(loaded):
    ids = loaded.manifest.indices("members")[:3]
    x0 = loaded.images.tensor(ids)
    with torch.no_grad():
        eps = loaded.target.unet(x0, torch.full((3,), 25)).sample
    out = build_attack("sima", {"timestep": 25}).score(loaded.target, AttackBatch(x0, ids))
    assert torch.allclose(out, -(eps.abs() ** 4).flatten(1).sum(1), rtol=1e-5)
    chosen, record = tune(loaded, "sima", {}, {"timestep": [10, 100, 300]})
    cal = sum(1 for e, _ in loaded.manifest.audit_entries() if e.half == "calibration")
    assert record["calibration_queries"] == 3 * cal  # only calibration images were scored
    best = max(record["candidates"], key=lambda r: (r["calibration_tpr"], r["calibration_auc"]))
    assert chosen == {"timestep": best["timestep"]}
    attack = build_attack("sima", {"candidates": [10, 100, 300]})
    attack.prepare(loaded, None)
    assert attack.timestep == chosen["timestep"] and attack.extra_info()["tuned"]["chosen"] == chosen


def test_one_run_p_value_against_the_formula():
    # all guesses right: the paper's ceilings (m = 1000): r = 100 -> 3.49, r = 1000 -> 5.81
    assert epsilon_lower_bound(100, 100, 1000) == pytest.approx(3.49, abs=0.01)
    assert epsilon_lower_bound(1000, 1000, 1000) == pytest.approx(5.81, abs=0.01)
    # the delta term by hand for a small case: alpha = max_i Pr[v > B >= v - i] / i
    r, v, m, eps, delta = 10, 8, 40, 1.0, 1e-3
    q = math.exp(eps) / (1 + math.exp(eps))
    alpha = max(sum(binom.pmf(j, r, q) for j in range(v - i, v)) / i for i in range(1, v + 1))
    assert p_value(eps, r, v, m, delta) == pytest.approx(binom.sf(v - 1, r, q) + alpha * delta * 2 * m)
    assert p_value(0.0, 10, 5, 40) == pytest.approx(binom.sf(4, 10, 0.5))
    # random guesses show nothing; perfect scores show something, paid for by Bonferroni over the grid
    rng = np.random.default_rng(0)
    coins = rng.random(200) < 0.5
    assert one_run_audit(rng.normal(size=200), coins).epsilon < 0.5
    perfect = one_run_audit(coins.astype(float), coins)
    assert perfect.epsilon > 1.0 and perfect.grid_size == len(guess_grid(200))
    assert perfect.epsilon < epsilon_lower_bound(perfect.guesses, perfect.guesses, 200)  # the correction costs


def test_canaries_are_bookkept_trained_and_scored(tmp_path):
    cfg = load_config(TINY, ["data.canaries=20", "train.steps=4"])
    run = train_target(cfg, tmp_path / "run", progress=False)
    loaded = load_run(run.root)
    canaries = loaded.manifest.canaries()
    assert len(canaries) == 20 and 0 < sum(c["included"] for c in canaries) < 20
    audited = {e.index for e, _ in loaded.manifest.audit_entries()} | set(loaded.manifest.indices("public"))
    assert not {c["index"] for c in canaries} & audited
    assert loaded.manifest.extra["training_set"]["canaries_included"] == sum(c["included"] for c in canaries)
    result = run_attack(loaded, build_attack("naive_loss"), tmp_path / "scores", progress=False)
    rows = result.scores[result.scores.split == "canary"]
    assert len(rows) == 20 and (rows.is_member.to_numpy() == [c["included"] for c in canaries]).all()
    from diffmia.evaluate.metrics import evaluate_scores

    m = evaluate_scores(result.scores.is_member, result.scores.score, result.scores.split, n_boot=10)
    assert m["n_test_members"] + m["n_calibration_members"] == len(loaded.manifest.members)  # canaries not counted


def test_references_of_a_stable_diffusion_lora_recipe(tmp_path):
    """The same code path for latent text-to-image recipes: a tiny random SD folder, LoRA, online references."""
    from tests.targets.test_t2i import tiny_sd_recipe

    cfg = tiny_sd_recipe(tmp_path, "[{name: lora, rank: 2}]", images=32, steps=3)
    run = train_target(cfg, tmp_path / "run", progress=False)
    loaded = load_run(run.root)
    result = run_attack(
        loaded, build_attack("lira", {"references": 2, "draws": 1}), tmp_path / "scores", progress=False
    )
    assert np.isfinite(result.scores.score).all() and result.info["references"]["count"] == 2
    refs = reference_models(loaded, 2, "online", seed=0)
    assert refs.cached == 2 and all((f / "adapter" / "adapter_model.safetensors").is_file() for f in refs.folders)


def test_references_fine_tune_the_targets_own_public_base(tmp_path):
    """A LoRA recipe's references start from the very base the target was fine-tuned from (trained once)."""
    cfg = load_config(TINY, ["train.steps=4", "defenses=[{name: lora, rank: 2, base_steps: 4}]"])
    run = train_target(cfg, tmp_path / "run", progress=False, cache_dir=tmp_path / "bases")
    loaded = load_run(run.root)
    refs = reference_models(loaded, 2, "online", cache_dir=tmp_path / "refs")
    assert len(list((tmp_path / "bases").glob("public-base-*"))) == 1
    assert not list((tmp_path / "refs").glob("public-base-*"))  # not trained again next to the references
    assert all((f / "adapter" / "adapter_model.safetensors").is_file() for f in refs.folders)


def test_references_train_in_parallel_processes_like_one_process(short, tmp_path, monkeypatch):
    """--jobs 2: the missing references train in two spawned processes; same subsets, seeds and folders as one
    process and, at the same thread count (1 per worker), the same weights."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # float32 sums depend on the thread count: compare like with like
    try:
        with monkeypatch.context() as m, captured() as logs:  # 2 CPUs without --jobs: the log says what --jobs 2 does
            m.setattr(parallel, "threads", lambda: 2)
            m.delenv("DIFFMIA_JOBS", raising=False)
            serial = reference_models(short, 2, "offline", cache_dir=tmp_path / "serial", seed=9)
    finally:
        torch.set_num_threads(threads)
    assert any("one at a time; `diffmia --jobs 2" in line for line in logs), logs
    monkeypatch.setenv("DIFFMIA_JOBS", "2")
    with captured() as logs:
        par = reference_models(short, 2, "offline", cache_dir=tmp_path / "parallel", seed=9)
    assert par.extra == {"jobs": 2} and par.cached == 0 and par.info()["jobs"] == 2
    assert not any("one at a time" in line for line in logs) and any("in 2 processes" in line for line in logs)
    assert [f.name for f in par.folders] == [f.name for f in serial.folders]
    for a, b in zip(serial.targets(), par.targets()):
        for (name, x), (_, y) in zip(a.unet.state_dict().items(), b.unet.state_dict().items()):
            assert torch.equal(x, y), name
    assert reference_models(short, 2, "offline", cache_dir=tmp_path / "parallel", seed=9).cached == 2


def test_references_under_torchrun_are_spread_over_the_processes(tmp_path):
    """torchrun with 2 processes: each trains one of the two missing references (in a child that sees no process
    group) and computes its statistics, the results are gathered, and the score file is identical to a one-process
    run's with its own fresh reference cache; the JSON records processes: 2 for the references."""
    import json
    import os
    import subprocess
    import sys

    from tests.launch import torchrun, worker_logs

    run = tmp_path / "run"  # the tiny recipe at its own 20 steps: each reference trains 20 steps, not 200
    train_target(load_config(TINY), run, progress=False)
    args = ["attack", str(run), "--attack", "lira", "--set", "references=2", "--no-progress"]
    # one torch thread everywhere: float32 sums depend on it, and 2 processes x 2 threads would oversubscribe CI's cores
    env = dict(os.environ, OMP_NUM_THREADS="1", DIFFMIA_THREADS="1", DIFFMIA_CACHE=str(tmp_path / "cache-one"))
    subprocess.run(
        [sys.executable, "-m", "diffmia", *args, "--out", str(tmp_path / "one")],
        env=env,
        check=True,
        capture_output=True,
    )
    done = torchrun(
        [*args, "--out", str(tmp_path / "two")], tmp_path / "logs", env={"DIFFMIA_CACHE": str(tmp_path / "cache-two")}
    )
    assert done.returncode == 0, worker_logs(done, tmp_path / "logs")
    assert (tmp_path / "one" / "lira.csv").read_bytes() == (tmp_path / "two" / "lira.csv").read_bytes()
    one = json.loads((tmp_path / "one" / "lira.json").read_text())
    two = json.loads((tmp_path / "two" / "lira.json").read_text())
    assert two["references"]["processes"] == 2 and two["references"]["cached"] == 0
    assert two["reference_queries"] == one["reference_queries"] > 0
    assert len(list((tmp_path / "cache-two" / "references").iterdir())) == 2


def test_gsa_classifier_equals_the_official_pipeline():
    """GSA's test_attack_accuracy.py (preprocess: members truncated to the non-members' count, stacked,
    sklearn.preprocessing.scale; XGBClassifier(n_estimators=200) on the shadow rows; the target scaled on its own),
    written out again here on fixed features, against the project's gsa_member_probability. The official script fits
    on a random 70% of the shadow rows (train_test_split) and only prints a report on the rest: both fit on all here."""
    pytest.importorskip("xgboost")
    from sklearn import preprocessing
    from xgboost import XGBClassifier

    from diffmia.attacks.gsa import gsa_member_probability, gsa_steps

    rng = np.random.default_rng(0)
    shift = np.linspace(0.0, 1.0, 12)
    shadow_member = rng.gamma(2.0, 1.0, (80, 12)) * 0.8 + shift
    shadow_non_member = rng.gamma(2.0, 1.0, (70, 12)) + shift
    target_member = 3.0 * (rng.gamma(2.0, 1.0, (50, 12)) * 0.8 + shift)  # a gradient-scale shift on the target
    target_non_member = 3.0 * (rng.gamma(2.0, 1.0, (50, 12)) + shift)

    def preprocess(member, non_member):
        member = member[: non_member.shape[0]]
        x = np.vstack((member, non_member))
        y = np.concatenate((np.ones(member.shape[0]), np.zeros(non_member.shape[0])))
        return preprocessing.scale(x), y

    shadow_x, shadow_y = preprocess(shadow_member, shadow_non_member)
    target_x, _ = preprocess(target_member, target_non_member)
    official = XGBClassifier(n_estimators=200).fit(shadow_x, shadow_y).predict_proba(target_x)[:, 1]

    reference_x = np.vstack((shadow_member[:70], shadow_non_member))
    ours = gsa_member_probability(reference_x, shadow_y, np.vstack((target_member, target_non_member)))
    assert np.allclose(ours, official, atol=1e-6)
    assert gsa_steps(1000, 10) == [99, 199, 299, 399, 499, 599, 699, 799, 899, 999]  # the official timesteps
    assert gsa_steps(1000, 3) == [332, 665, 998]


def _official_generate_ours(
    keep, scores, check_keep, check_scores, in_size=100000, out_size=100000, fix_variance=False
):
    """tensorflow/privacy research/mi_lira_2021 plot.py generate_ours, written out again here (scores: models x
    examples x augmentations; lower prediction = member, as its sweep reads -prediction)."""
    from scipy.stats import norm

    dat_in = [scores[keep[:, j], j, :] for j in range(scores.shape[1])]
    dat_out = [scores[~keep[:, j], j, :] for j in range(scores.shape[1])]
    in_size = min(min(map(len, dat_in)), in_size)
    out_size = min(min(map(len, dat_out)), out_size)
    dat_in = np.array([x[:in_size] for x in dat_in])
    dat_out = np.array([x[:out_size] for x in dat_out])
    mean_in, mean_out = np.median(dat_in, 1), np.median(dat_out, 1)
    if fix_variance:
        std_in = std_out = np.std(dat_in)
    else:
        std_in, std_out = np.std(dat_in, 1), np.std(dat_out, 1)
    prediction = []
    for sc in check_scores:
        prediction.extend(
            (-norm.logpdf(sc, mean_in, std_in + 1e-30) + norm.logpdf(sc, mean_out, std_out + 1e-30)).mean(1)
        )
    return np.array(prediction)


def _official_generate_ours_offline(keep, scores, check_scores, fix_variance=False):
    from scipy.stats import norm

    dat_out = [scores[~keep[:, j], j, :] for j in range(scores.shape[1])]
    out_size = min(map(len, dat_out))
    dat_out = np.array([x[:out_size] for x in dat_out])
    mean_out = np.median(dat_out, 1)
    std_out = np.std(dat_out) if fix_variance else np.std(dat_out, 1)
    return np.array([v for sc in check_scores for v in norm.logpdf(sc, mean_out, std_out + 1e-30).mean(1)])


def test_lira_equals_the_official_generate_ours():
    """On fixed statistics (one augmentation = one draw), online: the project's score is minus generate_ours'
    prediction, with and without fix_variance. Offline the project keeps the paper's one-sided test on purpose
    (the official scores the two-sided OUT log-density): with a global variance their rankings agree on the images
    fitted better than the references predict (phi below mu_out), which is where members are."""
    from diffmia.attacks.lira import fit_references, lira_scores

    rng = np.random.default_rng(0)
    models, n = 8, 50
    keep = np.zeros((models, n), bool)
    for pair in range(models // 2):  # complementary pairs: every example IN exactly half the models
        half = rng.permutation(n)[: n // 2]
        keep[2 * pair, half] = True
        keep[2 * pair + 1] = ~keep[2 * pair]
    stats = rng.normal(0, 1, (models, n)) - 0.7 * keep
    check = rng.normal(0, 1, (1, n)) - 0.7 * (rng.random(n) < 0.5)
    for fixed in (False, True):
        official = _official_generate_ours(keep, stats[..., None], None, check[..., None], fix_variance=fixed)
        ours = lira_scores(check[0], fit_references(stats, keep, "online", fixed), "online")
        assert np.allclose(ours, -official, atol=1e-9)
    official = _official_generate_ours_offline(keep, stats[..., None], check[..., None], fix_variance=True)
    fitted = fit_references(stats, keep, "offline", True)
    ours = lira_scores(check[0], fitted, "offline")
    better = check[0] < fitted["mu_out"]
    member_score = -official  # the official sweep reads -prediction
    assert (np.argsort(ours[better]) == np.argsort(member_score[better])).all()
