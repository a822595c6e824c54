"""Flow-matching models (targets/flow.py): a tiny random Stable Diffusion 3 pipeline built here (two CLIP encoders,
no T5, as SD3 runs without it) is audited black-box: its images equal the pipeline's own, ReDiffuse runs through
`diffmia audit --access black-box`, and the DDPM-based gray-box attacks are refused by name."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from diffmia.cli import app
from tests.targets.test_data import make_imagefolder
from tests.targets.test_sdxl import tiny_clip
from tests.targets.test_t2i import tiny_vae

CAPTIONS = [f"picture number {i}" for i in range(8)]


def make_tiny_sd3(folder, captions=CAPTIONS):
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    from diffmia.targets.text import build_tokenizer

    torch.manual_seed(0)
    tokenizer = build_tokenizer(captions, 12)
    text = tiny_clip(tokenizer)
    transformer = SD3Transformer2DModel(
        sample_size=4,
        patch_size=1,
        in_channels=4,
        num_layers=1,
        attention_head_dim=8,
        num_attention_heads=2,
        joint_attention_dim=32,
        caption_projection_dim=16,
        pooled_projection_dim=32,
        out_channels=4,
        pos_embed_max_size=8,
    )
    vae = tiny_vae()
    vae.register_to_config(shift_factor=0.1, scaling_factor=1.5)  # SD3's VAE has both
    StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        vae=vae,
        text_encoder=CLIPTextModelWithProjection(CLIPTextConfig(**text)),
        tokenizer=tokenizer,
        text_encoder_2=CLIPTextModelWithProjection(CLIPTextConfig(**text)),
        tokenizer_2=tokenizer,
        text_encoder_3=None,
        tokenizer_3=None,
    ).save_pretrained(folder, safe_serialization=True)


def test_an_sd3_folder_generates_what_its_pipeline_does(tmp_path):
    from diffusers import StableDiffusion3Pipeline

    from diffmia.targets.flow import FlowMatchingError, FlowMatchTarget
    from diffmia.targets.kinds import load_target

    make_tiny_sd3(tmp_path / "sd3")
    target = load_target(tmp_path / "sd3")
    assert isinstance(target, FlowMatchTarget) and target.image_shape == (3, 8, 8) and target.sample_shape == (4, 4, 4)
    noise = torch.randn((2, 4, 4, 4), generator=torch.Generator().manual_seed(1))
    ours = target.generate(2, CAPTIONS[:2], steps=3, initial_noise=noise)
    assert target.queries.sample_queries == 2 * 3 and target.queries.generations == 2
    absent = dict(text_encoder_3=None, tokenizer_3=None, image_encoder=None, feature_extractor=None)
    pipe = StableDiffusion3Pipeline.from_pretrained(tmp_path / "sd3", **absent)
    theirs = pipe(
        CAPTIONS[:2], num_inference_steps=3, guidance_scale=1.0, latents=noise, output_type="pt", height=8, width=8
    ).images
    assert torch.allclose((ours + 1) / 2, theirs, atol=1e-4)
    # vary: img2img at strength 500 / 1000, 2 Euler steps, one query per image and step
    images = torch.rand((2, 3, 8, 8)) * 2 - 1
    varied = target.vary(images, 500, 2, noise, CAPTIONS[:2])
    assert varied.shape == images.shape and target.queries.sample_queries == 6 + 4
    again = target.vary(images, 500, 2, noise, CAPTIONS[:2])
    assert torch.equal(varied, again)  # deterministic given the noise
    with pytest.raises(FlowMatchingError, match="flow-matching"):
        target.predict_noise(noise, 10, CAPTIONS[:2])


def test_audit_of_an_sd3_folder_runs_black_box_and_names_what_it_refuses(tmp_path):
    make_tiny_sd3(tmp_path / "sd3")
    make_imagefolder(tmp_path / "members", 8, (8, 8), seed=0)
    make_imagefolder(tmp_path / "nonmembers", 8, (8, 8), seed=1)
    args = ["audit", str(tmp_path / "sd3"), "--members", str(tmp_path / "members")]
    args += ["--nonmembers", str(tmp_path / "nonmembers"), "--bootstrap", "20", "--no-progress"]
    out = tmp_path / "audit"
    result = CliRunner().invoke(app, [*args, "--access", "black-box", "--attack", "rediffuse", "--out", str(out)])
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    info = results["recipes"]["sd3"]
    assert info["pipeline"] == "StableDiffusion3Pipeline" and info["prediction_type"] == "flow_matching"
    row = results["rows"][0]
    assert row["attack"] == "rediffuse" and np.isfinite(row["auc"])
    skipped = info["skipped_attacks"]
    assert "flow-matching" in skipped["naive_loss"] and "flow-matching" in skipped["pia"]
    gray = CliRunner().invoke(app, [*args, "--attack", "naive_loss", "--out", str(tmp_path / "gray")])
    assert gray.exit_code == 2 and "flow-matching" in gray.output and "--access black-box" in gray.output
