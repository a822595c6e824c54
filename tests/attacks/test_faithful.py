"""The corrections after comparing each attack with its official code (issue: faithful attacks), each checked against
a computation written here by hand: CLiD's in-place pad replacement, SD-MIA's pooling and official normalisation,
ReDiffuse's supervised variant, the text target's tokenizer and the perturbers' vocabulary."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

from diffmia.attacks import AttackBatch, build_attack
from diffmia.attacks.base import per_sample_noise
from diffmia.attacks.perturb import RulePerturber, top_percent_mean
from diffmia.attacks.runner import run_attack
from diffmia.attacks.sd_mia import fit_official
from diffmia.core.config import ConfigError, DataConfig, load_config, recipe_hash
from diffmia.targets.data import load_dataset
from diffmia.targets.runs import load_run
from diffmia.targets.text import build_tokenizer, words
from tests.conftest import REPO


def test_every_caption_and_word_encodes_without_unk():
    images = load_dataset(DataConfig())
    texts = images.all_caption_texts()
    tok = build_tokenizer(texts, 16)
    unk = tok.unk_token_id
    assert not [c for c in texts if unk in tok(c).input_ids]
    vocab = sorted({w for c in texts for w in words(c)})
    assert all(tok(w).input_ids == [2, tok.convert_tokens_to_ids(w), 3] for w in vocab)
    left, right = tok("a digit left-slanted").input_ids, tok("a digit right-slanted").input_ids
    assert left != right and len(left) == len(right) == 5  # one token each, told apart
    # every image has paraphrases, the canonical caption first
    assert all(v[0] == c and len(v) > 1 for v, c in zip(images.caption_variants, images.captions))


def test_text_recipes_hash_with_the_target_version():
    pixel, text = load_config(REPO / "configs" / "tiny.yaml"), load_config(REPO / "configs" / "tiny-t2i.yaml")
    import diffmia.core.config as config

    before = recipe_hash(pixel), recipe_hash(text)
    config.TEXT_TARGET_VERSION += 1
    try:
        assert recipe_hash(pixel) == before[0] and recipe_hash(text) != before[1]
    finally:
        config.TEXT_TARGET_VERSION -= 1


def test_no_perturbed_prompt_encodes_to_unk(text_run):
    target = text_run.target
    vocabulary = target.vocabulary()
    assert vocabulary and "left-slanted" in vocabulary
    perturber = RulePerturber(seed=0, vocabulary=vocabulary)
    unk = target.tokenizer.unk_token_id
    for i in text_run.manifest.indices("members")[:40]:
        caption = text_run.images.captions[i]
        for view in ("token", "style", "semantic"):
            prompt = perturber.perturb(caption, view, key=i)
            assert prompt != caption and unk not in target.tokenizer(prompt).input_ids, (caption, view, prompt)


def test_clid_pads_the_most_important_words_in_place(text_run):
    target = text_run.target
    attack = build_attack("clid", {"timesteps": [450], "rates": [0.5], "null_caption": True, "importance_images": 16})
    attack.prepare(text_run, None)
    assert attack.importance and attack.public_queries > 0
    ids = text_run.manifest.indices("members")[:3] + text_run.manifest.indices("nonmembers")[:3]
    captions = [text_run.images.captions[i] for i in ids]
    # by hand: rank each caption's words by the public-split importance, pad ceil(0.5 n) of them, positions kept
    reduced = []
    for c in captions:
        w = c.split()
        order = sorted(range(len(w)), key=lambda i: (-attack.importance.get(w[i], -math.inf), i))
        drop = set(order[: math.ceil(0.5 * len(w))])
        reduced.append(" ".join("[PAD]" if i in drop else x for i, x in enumerate(w)))
        full_ids, red_ids = target.tokenizer(c).input_ids, target.tokenizer(reduced[-1]).input_ids
        assert len(full_ids) == len(red_ids)  # in place: every other word keeps its position
        kept = [a == b for a, b in zip(full_ids, red_ids)]
        assert sum(not k for k in kept) == len(drop) and all(red_ids[i + 1] == 0 for i in drop)
    assert attack.reduced(captions, target.pad_text)[0] == reduced
    # D and L from the raw UNet and text encoder
    unet, text, tok = target.unet, target.text_encoder, target.tokenizer

    def loss(x_t, caps, eps):
        ids_ = tok(list(caps), padding="max_length", max_length=tok.model_max_length, return_tensors="pt").input_ids
        with torch.no_grad():
            pred = unet(x_t, torch.full((len(x_t),), 450), encoder_hidden_states=text(ids_)[0]).sample
        return ((pred - eps) ** 2).flatten(1).mean(1)

    x0 = text_run.images.tensor(ids)
    eps = per_sample_noise(ids, x0.shape[1:], seed=0, draw=0)
    abar = target.alpha_bar(450)
    x_t = abar**0.5 * x0 + (1 - abar) ** 0.5 * eps
    full = loss(x_t, captions, eps)
    disc = ((loss(x_t, reduced, eps) - full) + (loss(x_t, [""] * 6, eps) - full)) / 2
    out = attack.score(target, AttackBatch(x0, ids, captions))
    assert torch.allclose(out["discrepancy"], disc, atol=1e-6) and torch.allclose(out["loss"], -full, atol=1e-6)


def test_clid_fits_alpha_on_calibration_only():
    rng = np.random.default_rng(0)
    n = 200
    frame = pd.DataFrame(
        {
            "is_member": np.r_[np.ones(n), np.zeros(n)].astype(int),
            "split": (["calibration"] * (n // 2) + ["test"] * (n // 2)) * 2,
        }
    )
    frame["discrepancy"] = rng.normal(0, 1, 2 * n) + frame.is_member * 1.0
    frame["loss"] = rng.normal(0, 1, 2 * n)
    attack = build_attack("clid")
    score = attack.combine(frame)
    assert attack.fitted["alpha"] > 0.5  # the informative component gets the weight
    shuffled = frame.copy()
    test = shuffled.split == "test"
    shuffled.loc[test, "is_member"] = 1 - shuffled.loc[test, "is_member"]  # test labels never read
    assert np.allclose(build_attack("clid").combine(shuffled), score)
    fixed = build_attack("clid", {"alpha": 0.25})
    fixed.combine(frame)
    assert fixed.fitted == {"alpha": 0.25}


def test_sd_mia_pooling_and_official_normalisation_by_hand():
    sims = np.array([[0.1, 0.9, 0.3, 0.5, 0.2, 0.4, 0.8, 0.7, 0.6, 0.0]])
    assert top_percent_mean(sims, 10)[0] == 0.9  # K = 10% of N = 10: the best one
    assert top_percent_mean(sims, 30)[0] == pytest.approx((0.9 + 0.8 + 0.7) / 3)
    assert top_percent_mean(sims[:, :4], 10)[0] == 0.9  # floor(0.4) = 0 -> at least one
    assert top_percent_mean(sims[:, :4], 50)[0] == pytest.approx((0.9 + 0.5) / 2)

    rng = np.random.default_rng(1)
    n = 60
    frame = pd.DataFrame(
        {
            "is_member": np.r_[np.ones(n), np.zeros(n)].astype(int),
            "split": (["calibration"] * (n // 2) + ["test"] * (n // 2)) * 2,
        }
    )
    for k, v in enumerate(("token", "style", "semantic")):
        frame[f"s_{v}"] = rng.normal(0.5, 0.1, 2 * n) + 0.05 * (k + 1) * frame.is_member
    score, fitted = fit_official(frame, (frame.split == "calibration").to_numpy())
    # by hand: min-max on the calibration rows, the notebook's grid with later points winning ties
    from sklearn.metrics import roc_auc_score

    cal = frame.split == "calibration"
    d = {
        v: (frame[f"s_{v}"] - frame.loc[cal, f"s_{v}"].min())
        / (frame.loc[cal, f"s_{v}"].max() - frame.loc[cal, f"s_{v}"].min())
        for v in ("token", "style", "semantic")
    }
    auc_list, best = [], None
    for w1 in np.linspace(0, 1, 20):
        for w2 in np.linspace(0, 1, 20):
            s = w1 * d["token"] + w2 * d["style"] + d["semantic"]
            auc_list.append(roc_auc_score(frame.is_member[cal], s[cal]))
            if auc_list[-1] == max(auc_list):
                best = (w1, w2)
    assert (fitted["weights"]["token"], fitted["weights"]["style"]) == pytest.approx(best)
    ref = best[0] * d["token"] + best[1] * d["style"] + d["semantic"]
    assert np.allclose(score, ref)


def test_sd_mia_modes_queries_and_refusals(text_run):
    target = text_run.target
    small = {"generations": 2, "steps": 3}
    official, paper = build_attack("sd_mia", small), build_attack("sd_mia", {**small, "score_mode": "paper"})
    assert official.components == ("s_token", "s_style", "s_semantic")
    assert paper.components == ("s_original", "s_token", "s_style", "s_semantic")
    assert official.queries_per_sample(target) == 3 * 2 * 3 and paper.queries_per_sample(target) == 4 * 2 * 3
    assert build_attack("sd_mia", {**small, "guidance_scale": 3.0}).queries_per_sample(target) == 2 * 3 * 2 * 3
    assert build_attack("sd_mia").params.generations == 10 and build_attack("sd_mia").params.steps == 40
    with pytest.raises(ConfigError, match="score_mode official weighs all three views"):
        build_attack("sd_mia", {"views": ["token"]})
    frame = pd.DataFrame(
        {
            "s_original": [0.9, 0.5],
            "s_token": [0.8, 0.4],
            "s_style": [0.6, 0.6],
            "s_semantic": [0.1, 0.2],
            "split": ["test", "test"],
            "is_member": [1, 0],
        }
    )
    assert np.allclose(build_attack("sd_mia", {"score_mode": "mean"}).combine(frame), [0.5, 0.4])
    assert np.allclose(
        build_attack("sd_mia", {"score_mode": "paper"}).combine(frame),
        [np.mean([-0.1, -0.3, -0.8]), np.mean([-0.1, 0.1, -0.3])],
    )


def test_sd_mia_without_captioner_uses_image_features_only(text_run):
    attack = build_attack("sd_mia", {"generations": 1, "steps": 2})
    attack.prepare(text_run, text_run.run.root / ".cache")
    x = text_run.images.tensor(text_run.manifest.indices("members")[:4])
    ref = torch.nn.functional.normalize(attack.image_net(x).float(), dim=-1)
    assert torch.allclose(attack.embed(x, ["a digit"] * 4), ref)


def test_sd_mia_drops_images_without_a_rewrite_and_says_so(text_run, tmp_path, monkeypatch):
    attack = build_attack(
        "sd_mia",
        {
            "generations": 1,
            "steps": 2,
            "score_mode": "mean",
            "perturber": "llm",
            "llm_base_url": "http://127.0.0.1:9/v1",
            "llm_backoff": 0,
        },
    )
    # the LLM answers every caption but those of two images; for those, three attempts fail
    members = text_run.manifest.indices("members")
    refused = {text_run.images.captions[members[0]], text_run.images.captions[members[1]]}

    def ask(caption, view, attempt):
        if caption in refused:
            raise OSError("no answer")
        if view == "token":
            return caption.replace("large", "big").replace("small", "little").replace("medium", "mid-sized")
        if view == "style":
            return caption + ", pencil"
        return caption.rsplit(" ", 1)[0] + (" zero" if not caption.endswith("zero") else " one")

    monkeypatch.setattr(attack.perturber, "ask", ask)
    monkeypatch.setattr(attack.perturber, "floors", {"token": 0.0, "style": 0.0, "semantic": 0.0})
    result = run_attack(text_run, attack, tmp_path, progress=False)
    dropped = result.info["dropped"]
    audited = len(text_run.manifest.audit_entries())
    assert dropped["count"] >= 2 and set(dropped["ids"]) >= {members[0], members[1]}
    assert len(result.scores) == audited - dropped["count"] and not set(dropped["ids"]) & set(result.scores.sample_id)
    assert result.info["samples"] == len(result.scores) and np.isfinite(result.scores.score).all()


def test_rediffuse_supervised_variant_trains_on_calibration_only(tiny_run, tmp_path):
    loaded = load_run(tiny_run)
    params = {"repeats": 2, "classifier": "cnn", "cnn_epochs": 30}
    first = run_attack(loaded, build_attack("rediffuse", params), tmp_path / "a", progress=False)
    again = run_attack(loaded, build_attack("rediffuse", params), tmp_path / "b", progress=False)
    df = first.scores
    assert "distance" in df.columns and np.isfinite(df.score).all()
    assert first.info["fitted"]["trained_on"] == int((df.split == "calibration").sum())
    assert np.array_equal(df.score.to_numpy(), again.scores.score.to_numpy())  # seeded
    plain = run_attack(loaded, build_attack("rediffuse", {"repeats": 2}), tmp_path / "c", progress=False).scores
    assert np.allclose(plain.score, df.distance)  # the distance column is the unsupervised score
