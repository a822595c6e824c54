"""SDXL folders: a tiny random StableDiffusionXLPipeline built here, as diffusers' own tests do, loads as an
SDXLTarget whose noise predictions are the pipeline's own (its encode_prompt and micro-conditioning), and is audited
gray-box and black-box through `diffmia audit`."""

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


def test_fine_tuning_sdxl_is_refused_by_name():
    from diffmia.core.registries import TARGETS

    with pytest.raises(ConfigError, match="stable-diffusion-xl: fine-tuning SDXL"):
        TARGETS.get("stable-diffusion-xl")().build(None, [], 8, 3)
