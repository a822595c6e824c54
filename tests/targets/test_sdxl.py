"""SDXL folders: a tiny random StableDiffusionXLPipeline built here, as diffusers' own tests do, loads as an
SDXLTarget whose noise predictions are the pipeline's own (its encode_prompt and micro-conditioning), is audited
gray-box and black-box through `diffmia audit`, and is fine-tuned in diffmia's loop (in full and with LoRA) on the
same conditioning."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from diffmia.cli import app
from diffmia.core.config import ConfigError
from tests.targets.test_data import make_imagefolder
from tests.targets.test_t2i import tiny_vae

CAPTIONS = [f"picture number {i}" for i in range(8)]


def tiny_clip(tokenizer) -> dict:
    """A 2-layer CLIP text config of width 16 (projection 16) over `tokenizer`: the text encoders of the tiny SDXL
    and SD3 pipelines the tests build."""
    return dict(
        vocab_size=len(tokenizer),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=12,
        bos_token_id=2,
        eos_token_id=3,
        projection_dim=16,
    )


def make_tiny_sdxl(folder, captions=CAPTIONS):
    from diffusers import DDPMScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from diffmia.targets.text import build_tokenizer

    torch.manual_seed(0)
    tokenizer = build_tokenizer(captions, 12)
    text = tiny_clip(tokenizer)
    unet = UNet2DConditionModel(
        sample_size=4,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(8, 16),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=6 * 8 + 16,
        cross_attention_dim=32,
        norm_num_groups=4,
    )
    vae = tiny_vae()
    StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=CLIPTextModel(CLIPTextConfig(**text)),
        text_encoder_2=CLIPTextModelWithProjection(CLIPTextConfig(**text)),
        tokenizer=tokenizer,
        tokenizer_2=tokenizer,
        unet=unet,
        scheduler=DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012),
    ).save_pretrained(folder, safe_serialization=True)


def test_an_sdxl_folder_predicts_what_its_pipeline_does(tmp_path):
    from diffusers import StableDiffusionXLPipeline

    from diffmia.targets.kinds import load_target
    from diffmia.targets.target import SDXLTarget

    make_tiny_sdxl(tmp_path / "sdxl")
    target = load_target(tmp_path / "sdxl")
    assert isinstance(target, SDXLTarget) and target.image_shape == (3, 8, 8) and target.latent
    pipe = StableDiffusionXLPipeline.from_pretrained(tmp_path / "sdxl")
    embeds, _, pooled, _ = pipe.encode_prompt(CAPTIONS[:2], device="cpu", do_classifier_free_guidance=False)
    time_ids = pipe._get_add_time_ids(
        (8, 8),
        (0, 0),
        (8, 8),
        dtype=embeds.dtype,
        text_encoder_projection_dim=pipe.text_encoder_2.config.projection_dim,
    ).repeat(2, 1)
    x = torch.randn(2, *target.sample_shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = pipe.unet(
            x, 50, encoder_hidden_states=embeds, added_cond_kwargs={"text_embeds": pooled, "time_ids": time_ids}
        ).sample
    assert torch.allclose(target.predict_noise(x, 50, CAPTIONS[:2]), expected, atol=1e-5)
    empty = target.text_features([""])  # force_zeros_for_empty_prompt: the pipeline's unconditional branch
    assert torch.count_nonzero(empty) == 0
    images = target.generate(2, CAPTIONS[:2], steps=3, guidance_scale=2.0)
    assert images.shape == (2, 3, 8, 8) and torch.isfinite(images).all()


def test_an_sdxl_folder_is_audited_gray_box_and_black_box(tmp_path):
    make_imagefolder(tmp_path / "members", n=8, size=(8, 8), seed=1)  # captions: picture number 0..7
    make_imagefolder(tmp_path / "nonmembers", n=8, size=(8, 8), seed=2)
    make_tiny_sdxl(tmp_path / "sdxl")
    common = ["--members", str(tmp_path / "members"), "--nonmembers", str(tmp_path / "nonmembers")]
    runs = (("gray-box", ["naive_loss", "pia", "secmi"], []), ("black-box", ["rediffuse"], ["rediffuse.repeats=2"]))
    for access, attacks, settings in runs:
        out = tmp_path / access
        args = ["audit", str(tmp_path / "sdxl"), *common, "--access", access, "--out", str(out), "--bootstrap", "10"]
        args += [
            "--no-progress",
            *[x for a in attacks for x in ("--attack", a)],
            *[x for s in settings for x in ("--set", s)],
        ]
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
        rows = pd.read_csv(out / "results.csv")
        assert sorted(rows.attack) == sorted(attacks) and np.isfinite(rows.auc).all()
        info = json.loads((out / "results.json").read_text())["recipes"]["sdxl"]
        assert info["pipeline"] == "StableDiffusionXLPipeline" and info["prediction_type"] == "epsilon"
        assert "StableDiffusionXLPipeline, epsilon prediction" in (out / "report.md").read_text()


def sdxl_recipe(tmp_path, defenses: str, images: int = 24, steps: int = 4):
    """A tiny random SDXL folder and a recipe fine-tuning it on a tiny captioned image folder."""
    from tests.targets.test_t2i import fine_tune_recipe

    data = make_imagefolder(tmp_path / "imgs", n=images, size=(16, 16))
    make_tiny_sdxl(tmp_path / "sdxl", [f"picture number {i}" for i in range(images)])
    return fine_tune_recipe("stable-diffusion-xl", tmp_path / "sdxl", data, defenses, steps)


def test_sdxl_trains_on_what_its_pipeline_predicts(tmp_path):
    """The denoiser the training loop optimises conditions the UNet as the saved SDXL target (and so the pipeline)
    does: both text encoders' penultimate states, the pooled embedding and the micro-conditioning."""
    from diffmia.core.registries import TARGETS
    from diffmia.targets.denoiser import caption_ids
    from diffmia.targets.kinds import load_target

    cfg = sdxl_recipe(tmp_path, "[]")
    built = TARGETS.get("stable-diffusion-xl")().build(cfg, CAPTIONS, 8, 3)
    target = load_target(tmp_path / "sdxl")
    x = torch.randn(3, *target.sample_shape, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([10, 400, 900])
    with torch.no_grad():
        trained = built.model(x, t, caption_ids(built, CAPTIONS[:3]))
    assert torch.allclose(trained, target.predict_noise(x, t, CAPTIONS[:3]), atol=1e-5)
    assert built.text_shape == (12, 32)  # text-feature noise covers both encoders' features


@pytest.mark.parametrize("defenses", ["[]", "[{name: lora, rank: 2}]"])
def test_sdxl_fine_tunes_in_full_and_with_lora(tmp_path, defenses):
    from safetensors.torch import load_file

    from diffmia.attacks import build_attack
    from diffmia.attacks.runner import run_attack
    from diffmia.targets.runs import load_run
    from diffmia.targets.target import SDXLTarget
    from diffmia.targets.train import train_target

    cfg = sdxl_recipe(tmp_path, defenses)
    run = train_target(cfg, tmp_path / "run", progress=False)
    loaded = load_run(run.root)
    assert isinstance(loaded.target, SDXLTarget)
    before = load_file(tmp_path / "sdxl" / "unet" / "diffusion_pytorch_model.safetensors")
    after = load_file(run.target / "unet" / "diffusion_pytorch_model.safetensors")
    assert before.keys() == after.keys()
    assert any(not torch.equal(before[k], after[k]) for k in before)  # the UNet was trained (LoRA: merged in)
    te_before = load_file(tmp_path / "sdxl" / "text_encoder_2" / "model.safetensors")
    te_after = load_file(run.target / "text_encoder_2" / "model.safetensors")
    assert all(torch.equal(te_before[k], te_after[k]) for k in te_before)  # text encoders frozen, as the script
    result = run_attack(loaded, build_attack("pia", {}), tmp_path / "scores", progress=False)
    assert len(result.scores) == 16 and np.isfinite(result.scores.score).all()
    if "lora" in defenses:
        assert (run.root / "adapter" / "adapter_model.safetensors").is_file()


def test_sdxl_refuses_token_level_caption_randomisation_and_a_wrong_folder(tmp_path):
    from diffmia.targets.denoiser import ModelError
    from diffmia.targets.train import train_target
    from tests.targets.test_t2i import make_tiny_sd

    cfg = sdxl_recipe(tmp_path, "[{name: caption_randomisation, mode: tokens}]")
    with pytest.raises(ConfigError, match="two tokenizers; use mode: replace"):
        train_target(cfg, tmp_path / "run", progress=False)
    make_tiny_sd(tmp_path / "sd", CAPTIONS)
    wrong = cfg.model_copy(update={"model": cfg.model.model_copy(update={"pretrained": str(tmp_path / "sd")})})
    with pytest.raises(ModelError, match="a StableDiffusionPipeline folder, but this model.kind loads a Stable"):
        train_target(wrong, tmp_path / "run2", progress=False)
