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


def make_tiny_flux(folder, captions=CAPTIONS):
    """A tiny random FluxPipeline: a CLIP text encoder (pooled), a T5 encoder with a Unigram tokenizer built from the
    captions' words, a 1 + 1 block transformer with guidance embeddings, the tiny VAE (4 latent channels: 16 when
    packed)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel, T5TokenizerFast

    from diffmia.targets.text import build_tokenizer

    torch.manual_seed(0)
    tokenizer = build_tokenizer(captions, 12)
    words = sorted({w for c in captions for w in c.split()})
    t5_tokenizer = T5TokenizerFast(
        vocab=[("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)] + [("\u2581" + w, -1.0) for w in words], extra_ids=0
    )
    t5 = T5EncoderModel(
        T5Config(
            vocab_size=len(t5_tokenizer),
            d_model=32,
            d_kv=8,
            d_ff=37,
            num_layers=2,
            num_heads=4,
            relative_attention_num_buckets=8,
        )
    )
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=16,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        pooled_projection_dim=16,
        guidance_embeds=True,
        axes_dims_rope=(4, 6, 6),
    )
    vae = tiny_vae()
    vae.register_to_config(shift_factor=0.1, scaling_factor=1.5)
    scheduler = FlowMatchEulerDiscreteScheduler(
        shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15, base_image_seq_len=256
    )
    FluxPipeline(
        scheduler=scheduler,
        vae=vae,
        text_encoder=CLIPTextModel(CLIPTextConfig(**tiny_clip(tokenizer))),
        tokenizer=tokenizer,
        text_encoder_2=t5,
        tokenizer_2=t5_tokenizer,
        transformer=transformer,
    ).save_pretrained(folder, safe_serialization=True)


def test_a_flux_folder_generates_as_its_pipeline_does(tmp_path):
    from diffusers import FluxPipeline

    from diffmia.targets.flow import FlowMatchingError, FluxTarget
    from diffmia.targets.kinds import load_target

    make_tiny_flux(tmp_path / "flux")
    target = load_target(tmp_path / "flux")
    assert isinstance(target, FluxTarget) and target.flow_matching
    assert target.sample_shape == (4, 128, 128) and target.image_shape == (3, 256, 256)  # the pipeline's default size
    noise = torch.randn((2, 4, 128, 128), generator=torch.Generator().manual_seed(1))
    ours = target.generate(2, CAPTIONS[:2], steps=2, guidance_scale=3.5, initial_noise=noise)
    assert target.queries.sample_queries == 2 * 2  # guidance is embedded: one call per step
    pipe = FluxPipeline.from_pretrained(tmp_path / "flux")
    packed = pipe._pack_latents(noise, 2, 4, 128, 128)
    theirs = pipe(CAPTIONS[:2], num_inference_steps=2, guidance_scale=3.5, latents=packed, output_type="pt").images
    assert torch.allclose((ours + 1) / 2, theirs, atol=1e-4)
    # vary (img2img): the last 2 steps of a 4-step grid of the pipeline's schedule, one query per image and step
    images = torch.rand((2, 3, 256, 256)) * 2 - 1
    varied = target.vary(images, 500, 2, noise, CAPTIONS[:2], guidance_scale=3.5)
    assert varied.shape == images.shape and target.queries.sample_queries == 4 + 4
    assert torch.equal(varied, target.vary(images, 500, 2, noise, CAPTIONS[:2], guidance_scale=3.5))
    with pytest.raises(FlowMatchingError, match="flow-matching"):
        target.predict_noise(noise, 10, CAPTIONS[:2])


def test_audit_of_a_flux_folder_runs_black_box(tmp_path):
    make_tiny_flux(tmp_path / "flux")
    make_imagefolder(tmp_path / "members", 6, (256, 256), seed=0)
    make_imagefolder(tmp_path / "nonmembers", 6, (256, 256), seed=1)
    out = tmp_path / "audit"
    args = ["audit", str(tmp_path / "flux"), "--members", str(tmp_path / "members"), "--nonmembers"]
    args += [str(tmp_path / "nonmembers"), "--bootstrap", "20", "--no-progress", "--access", "black-box"]
    args += ["--attack", "rediffuse", "--set", "rediffuse.repeats=1", "--set", "rediffuse.steps=1", "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    info = json.loads((out / "results.json").read_text())["recipes"]["flux"]
    assert info["pipeline"] == "FluxPipeline" and info["prediction_type"] == "flow_matching"
    assert "flow-matching" in info["skipped_attacks"]["secmi"]
