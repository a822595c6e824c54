"""What the one training loop optimises, for every model kind: (x_t, t, caption ids) -> predicted noise.

- `PixelDenoiser`: a UNet2DModel on pixels (captions ignored);
- `TextDenoiser`: a UNet2DConditionModel cross-attending to a CLIP text encoder's features (trained with the UNet for
  our small text-conditioned targets, frozen for Stable Diffusion), optionally with Gaussian noise added to the text
  features (a text-side defense);
- Stable Diffusion trains a TextDenoiser on VAE latents (scaled by the VAE's scaling factor), encoded once up front;
- `SDXLDenoiser`: Stable Diffusion XL's UNet conditioned as its pipeline does (two text encoders' penultimate hidden
  states concatenated, the second's pooled embedding and the size / crop micro-conditioning as added conditions),
  trained on latents like Stable Diffusion (diffusers' train_text_to_image_sdxl.py).

Each target kind (targets/kinds.py, the TARGETS registry) builds the right one from the recipe and saves it as a
diffusers pipeline folder: DDPMPipeline, DigitsTextPipeline or StableDiffusionPipeline.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from diffusers import UNet2DConditionModel

from diffmia.core.config import TargetConfig
from diffmia.core.errors import DiffmiaError

from .text import tokenize


class PixelDenoiser(torch.nn.Module):
    def __init__(self, unet):
        super().__init__()
        self.unet = unet

    def forward(self, x_t, t, ids=None, text_noise=None):
        return self.unet(x_t, t).sample


class TextDenoiser(torch.nn.Module):
    def __init__(self, unet, text_encoder):
        super().__init__()
        self.unet = unet
        self.text_encoder = text_encoder

    def forward(self, x_t, t, ids, text_noise=None):
        h = self.text_encoder(ids)[0]
        if text_noise is not None:
            h = h + text_noise
        return self.unet(x_t, t, encoder_hidden_states=h).sample


def sdxl_text_features(text_encoder, text_encoder_2, ids: torch.Tensor, ids_2: torch.Tensor):
    """SDXL's text conditioning, as StableDiffusionXLPipeline.encode_prompt computes it: the penultimate hidden
    states of both encoders concatenated (B, tokens, d1 + d2), and the second encoder's pooled projection (B, p)."""
    hidden = text_encoder(ids, output_hidden_states=True).hidden_states[-2]
    out = text_encoder_2(ids_2, output_hidden_states=True)
    return torch.cat([hidden, out.hidden_states[-2]], dim=-1), out[0]


def sdxl_time_ids(x_t: torch.Tensor, vae_scale: int, dtype: torch.dtype) -> torch.Tensor:
    """SDXL's micro-conditioning for latents x_t: original size = target size = the image size the latents decode
    to, crop (0, 0), as the pipeline samples and as diffmia trains (images are resized, not cropped)."""
    h, w = int(x_t.shape[-2]) * vae_scale, int(x_t.shape[-1]) * vae_scale
    return torch.tensor([[h, w, 0, 0, h, w]], dtype=dtype, device=x_t.device).repeat(len(x_t), 1)


class SDXLDenoiser(torch.nn.Module):
    """Stable Diffusion XL as the training loop sees it: `ids` holds both tokenizers' ids side by side (the first
    `split` columns for text_encoder, the rest for text_encoder_2); text-feature noise is added to the concatenated
    hidden states the UNet cross-attends to (the pooled embedding is left as it is)."""

    def __init__(self, unet, text_encoder, text_encoder_2, split: int, vae_scale: int):
        super().__init__()
        self.unet = unet
        self.text_encoder = text_encoder
        self.text_encoder_2 = text_encoder_2
        self.split = int(split)
        self.vae_scale = int(vae_scale)

    @property
    def text_width(self) -> int:
        return int(self.text_encoder.config.hidden_size + self.text_encoder_2.config.hidden_size)

    def forward(self, x_t, t, ids, text_noise=None):
        feats, pooled = sdxl_text_features(
            self.text_encoder, self.text_encoder_2, ids[:, : self.split], ids[:, self.split :]
        )
        if text_noise is not None:
            feats = feats + text_noise
        added = {"text_embeds": pooled, "time_ids": sdxl_time_ids(x_t, self.vae_scale, feats.dtype)}
        return self.unet(x_t, t, encoder_hidden_states=feats, added_cond_kwargs=added).sample


@dataclass
class Built:
    model: torch.nn.Module
    tokenizer: Any = None
    vae: Any = None
    pipeline_parts: dict = field(default_factory=dict)  # untouched parts of a pretrained pipeline (SD)
    noise_scheduler: Any = None  # a pretrained pipeline's own schedule (SD); None: the recipe's scheduler section
    tokenizer_2: Any = None  # SDXL's second tokenizer: caption ids are both tokenizations side by side

    @property
    def text_shape(self) -> tuple[int, int] | None:
        """(tokens, features) of the text features the UNet cross-attends to, for text-feature noise."""
        if not self.conditional:
            return None
        width = getattr(self.model, "text_width", None) or self.model.text_encoder.config.hidden_size
        return (self.tokenizer.model_max_length, int(width))

    @property
    def conditional(self) -> bool:
        return self.tokenizer is not None


class ModelError(DiffmiaError):
    """A pretrained folder that is missing or not a diffusers pipeline."""


# The libraries a model folder's components may come from. diffusers would otherwise import a module a
# model_index.json names, a .py file inside the folder included (custom components): code from whoever sent the folder.
COMPONENT_LIBRARIES = {"diffusers", "transformers"}
MODEL_INDEX_MAX_BYTES = 1 << 20


def _json_object(path: Path) -> dict:
    """A model folder's JSON file (at most MODEL_INDEX_MAX_BYTES) as a dict; ModelError naming it otherwise."""
    if path.stat().st_size > MODEL_INDEX_MAX_BYTES:
        raise ModelError(f"{path}: {path.stat().st_size} bytes, not a model file (at most {MODEL_INDEX_MAX_BYTES})")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        raise ModelError(f"{path}: not valid JSON (truncated or corrupt)") from None
    if not isinstance(data, dict):
        raise ModelError(f"{path}: must be a JSON object, got {type(data).__name__}")
    return data


def read_model_index(folder: Path) -> dict:
    """model_index.json of a diffusers folder, checked before anything is loaded: a JSON object whose `_class_name`
    is a string and whose every component (a list) is [library, class] with library diffusers or transformers (or
    null); other values are pipeline settings.
    Raises ModelError naming the file and the entry otherwise."""
    index = Path(folder) / "model_index.json"
    if not index.is_file():
        raise ModelError(
            f"{folder}: not a local diffusers pipeline folder (model_index.json missing); weights are never downloaded"
        )
    data = _json_object(index)
    if not isinstance(data.get("_class_name"), str):
        raise ModelError(
            f"{index}: _class_name must be a string naming the pipeline class, got "
            f"{type(data.get('_class_name')).__name__}"
        )
    for key, value in data.items():
        if key.startswith("_") or not isinstance(value, list):  # a pipeline setting (requires_safety_checker: false)
            continue
        if not (len(value) == 2 and all(v is None or isinstance(v, str) for v in value)):
            raise ModelError(f"{index}: component {key[:80]!r} must be [library, class], got {str(value)[:80]}")
        library = value[0]
        if library is not None and library not in COMPONENT_LIBRARIES:
            raise ModelError(
                f"{index}: component {key[:80]!r} names library {library[:80]!r}: diffmia loads only "
                f"{' and '.join(sorted(COMPONENT_LIBRARIES))} components and never runs code from a model "
                f"folder"
            )
    return data


# Bounds on the sizes a component's config.json may ask for, checked before anything is allocated: a crafted folder
# asking for a 10^9-channel UNet gets one line, not an out-of-memory kill. Real models sit far inside (SDXL: 1280).
SIZE_LIMITS = {
    "block_out_channels": 16384,
    "layers_per_block": 64,
    "sample_size": 8192,
    "cross_attention_dim": 16384,
    "in_channels": 1024,
    "out_channels": 1024,
    "latent_channels": 1024,
    "norm_num_groups": 4096,
    "hidden_size": 65536,
    "intermediate_size": 262144,
    "num_hidden_layers": 512,
    "num_attention_heads": 1024,
    "vocab_size": 2_000_000,
    "max_position_embeddings": 1_000_000,
    "projection_dim": 65536,
    "num_train_timesteps": 100_000,
    "image_size": 8192,
}


def check_component_sizes(folder: Path) -> None:
    """Every component config.json of a pipeline folder (and the folder's own): the sizes of SIZE_LIMITS are
    non-negative integers (or lists of them, at most 64 long) within their bounds; ModelError names file and key."""
    folder = Path(folder)
    for config in [
        folder / "config.json",
        *sorted(folder.glob("*/config.json")),
        *sorted(folder.glob("*/scheduler_config.json")),
    ]:
        if not config.is_file():
            continue
        data = _json_object(config)
        nested = [data] + [v for v in data.values() if isinstance(v, dict)]  # text_config / vision_config
        for part in nested:
            for key, limit in SIZE_LIMITS.items():
                if key not in part or part[key] is None:
                    continue
                value = part[key]
                values = value if isinstance(value, list) else [value]
                if len(values) > 64 or not all(
                    isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= limit for v in values
                ):
                    raise ModelError(
                        f"{config}: {key} = {str(value)[:80]} is outside what a model can be "
                        f"(integers 0..{limit}); refused before allocating anything"
                    )


def check_pipeline_class(folder: Path, expected: str) -> None:
    """A pretrained folder's pipeline class is the one the recipe's model.kind loads; ModelError naming both."""
    found = read_model_index(folder)["_class_name"]
    if found != expected:
        raise ModelError(
            f"{folder}: a {found} folder, but this model.kind loads a {expected} (model.kind and model.pretrained "
            f"disagree)"
        )


def load_stable_diffusion(path: str):
    from diffusers import StableDiffusionPipeline

    folder = Path(path)
    check_pipeline_class(folder, "StableDiffusionPipeline")
    check_component_sizes(folder)
    return StableDiffusionPipeline.from_pretrained(
        folder, use_safetensors=True, safety_checker=None, requires_safety_checker=False, trust_remote_code=False
    )


def load_stable_diffusion_xl(path: str):
    from diffusers import StableDiffusionXLPipeline

    folder = Path(path)
    check_pipeline_class(folder, "StableDiffusionXLPipeline")
    check_component_sizes(folder)
    return StableDiffusionXLPipeline.from_pretrained(folder, use_safetensors=True, trust_remote_code=False)


def unet2d_condition(cfg: TargetConfig, resolution: int, channels: int) -> UNet2DConditionModel:
    m = cfg.model
    down = tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in m.attention)
    up = tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(m.attention))
    return UNet2DConditionModel(
        sample_size=resolution,
        in_channels=channels,
        out_channels=channels,
        layers_per_block=m.layers_per_block,
        block_out_channels=tuple(m.block_out_channels),
        down_block_types=down,
        up_block_types=up,
        cross_attention_dim=m.cross_attention_dim,
        norm_num_groups=m.norm_num_groups,
        attention_head_dim=m.attention_head_dim,
    )


@torch.no_grad()
def encode_latents(vae, images: torch.Tensor, batch: int = 32) -> torch.Tensor:
    """Images in [-1, 1] -> VAE latent means times the scaling factor (deterministic)."""
    sf = vae.config.scaling_factor
    return torch.cat([vae.encode(images[i : i + batch]).latent_dist.mean * sf for i in range(0, len(images), batch)])


def caption_ids(built: Built, texts: list[str]) -> torch.Tensor | None:
    """Token ids of `texts` (None for an unconditional model); SDXL: both tokenizers' ids side by side."""
    if not built.conditional:
        return None
    ids = tokenize(built.tokenizer, texts)
    if built.tokenizer_2 is not None:
        ids = torch.cat([ids, tokenize(built.tokenizer_2, texts)], dim=1)
    return ids
