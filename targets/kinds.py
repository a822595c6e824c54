"""Target kinds: each owns how its denoiser is built from a recipe, saved as a diffusers pipeline folder and loaded
back as a Target. They are registered in the TARGETS registry (diffmia.core.registries) under the name a recipe gives
as `model.kind`; a saved folder is matched to its kind by the pipeline class in its model_index.json.

| model.kind | saved as | Target |
|---|---|---|
| unet2d | DDPMPipeline | PixelDDPMTarget |
| unet2d-condition | DigitsTextPipeline | TextTarget |
| stable-diffusion | StableDiffusionPipeline | LatentTextTarget |
| stable-diffusion-xl | StableDiffusionXLPipeline | SDXLTarget |
| stable-diffusion-3 | StableDiffusion3Pipeline | FlowMatchTarget (audited black-box; not fine-tuned here) |
| flux | FluxPipeline | FluxTarget (audited black-box; not fine-tuned here) |

Other packages add kinds through the entry-point group ``diffmia.targets``.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import torch
from diffusers import DDPMPipeline, DDPMScheduler

from diffmia.core.config import ConfigError, TargetConfig
from diffmia.core.registries import TARGETS

from .denoiser import (
    Built,
    ModelError,
    PixelDenoiser,
    SDXLDenoiser,
    TextDenoiser,
    check_component_sizes,
    load_stable_diffusion,
    load_stable_diffusion_xl,
    read_model_index,
    unet2d_condition,
)
from .flow import FlowMatchTarget, FluxTarget
from .models import build_scheduler, build_unet
from .target import LatentTextTarget, PixelDDPMTarget, SDXLTarget, Target, TextTarget
from .text import DigitsTextPipeline, build_text_encoder, build_tokenizer


class TargetKind:
    """One kind of target: build, save, load.

    Subclasses set `name` (the recipe's `model.kind`), `pipeline_class` (the `_class_name` of the saved folder's
    model_index.json) and `target` (the Target subclass that opens the folder).
    """

    name: ClassVar[str]
    pipeline_class: ClassVar[str]
    target: ClassVar[type[Target]]
    # starts from a pretrained pipeline (model.pretrained): its noise schedule is the pipeline's (the recipe's
    # scheduler section does not apply) and its weights are the public base a fine-tune starts from
    pretrained: ClassVar[bool] = False

    def build(self, cfg: TargetConfig, captions: list[str], resolution: int, channels: int) -> Built:
        """The denoiser the training loop optimises, from the recipe.

        Args:
            cfg: The recipe.
            captions: Every caption text of the dataset (text kinds build their tokenizer from them).
            resolution: Image size the model trains at.
            channels: Image channels.

        Returns:
            The denoiser with what saving it needs (tokenizer, VAE, pipeline parts).
        """
        raise NotImplementedError

    def save(self, built: Built, model: torch.nn.Module, cfg: TargetConfig, folder: Path) -> None:
        """Write the trained denoiser `model` (a copy with the final weights) as a diffusers pipeline folder."""
        raise NotImplementedError

    def load(self, folder: Path, device: str | torch.device = "cpu") -> Target:
        """Open a saved folder of this kind."""
        return self.target.from_folder(folder, device)


def register_target_kind(cls: type[TargetKind]) -> type[TargetKind]:
    return TARGETS.register(cls.name)(cls)


def kind_of_folder(pipeline_class: str) -> type[TargetKind] | None:
    """The registered kind whose saved folders have this pipeline class (None: no kind has it)."""
    return next((k for k in TARGETS.load_all().values() if k.pipeline_class == pipeline_class), None)


@register_target_kind
class PixelKind(TargetKind):
    name = "unet2d"
    pipeline_class = "DDPMPipeline"
    target = PixelDDPMTarget

    def build(self, cfg, captions, resolution, channels):
        return Built(PixelDenoiser(build_unet(cfg.model, resolution, channels)))

    def save(self, built, model, cfg, folder):
        DDPMPipeline(
            unet=model.unet, scheduler=build_scheduler(cfg.scheduler, cfg.model.prediction_type)
        ).save_pretrained(folder, safe_serialization=True)


@register_target_kind
class TextKind(TargetKind):
    name = "unet2d-condition"
    pipeline_class = "DigitsTextPipeline"
    target = TextTarget

    def build(self, cfg, captions, resolution, channels):
        tokenizer = build_tokenizer(captions, cfg.model.max_caption_tokens)
        longest = max((len(tokenizer(c).input_ids) for c in captions), default=0)
        if longest > cfg.model.max_caption_tokens:
            raise ConfigError(
                f"model.max_caption_tokens={cfg.model.max_caption_tokens} is too small: the longest training "
                f"caption takes {longest} tokens with [BOS]/[EOS] (it would be cut)"
            )
        text = build_text_encoder(
            len(tokenizer),
            cfg.model.cross_attention_dim,
            cfg.model.text_layers,
            cfg.model.text_heads,
            cfg.model.max_caption_tokens,
        )
        text.requires_grad_(cfg.train.train_text_encoder)
        return Built(TextDenoiser(unet2d_condition(cfg, resolution, channels), text), tokenizer)

    def save(self, built, model, cfg, folder):
        scheduler = build_scheduler(cfg.scheduler, cfg.model.prediction_type)
        DigitsTextPipeline(model.unet, model.text_encoder, built.tokenizer, scheduler).save_pretrained(
            folder, safe_serialization=True
        )


@register_target_kind
class StableDiffusionKind(TargetKind):
    name = "stable-diffusion"
    pipeline_class = "StableDiffusionPipeline"
    target = LatentTextTarget
    pretrained = True

    def build(self, cfg, captions, resolution, channels):
        pipe = load_stable_diffusion(cfg.model.pretrained)
        pipe.text_encoder.requires_grad_(False)
        pipe.vae.requires_grad_(False)
        return Built(
            TextDenoiser(pipe.unet, pipe.text_encoder),
            pipe.tokenizer,
            pipe.vae,
            {"vae": pipe.vae, "scheduler": pipe.scheduler, "feature_extractor": pipe.feature_extractor},
            noise_scheduler=DDPMScheduler.from_config(pipe.scheduler.config),
        )

    def save(self, built, model, cfg, folder):
        from diffusers import StableDiffusionPipeline

        parts = built.pipeline_parts
        StableDiffusionPipeline(
            vae=parts["vae"],
            text_encoder=model.text_encoder,
            tokenizer=built.tokenizer,
            unet=model.unet,
            scheduler=parts["scheduler"],
            safety_checker=None,
            feature_extractor=parts["feature_extractor"],
            requires_safety_checker=False,
        ).save_pretrained(folder, safe_serialization=True)


class AuditOnlyKind(TargetKind):
    """A kind diffmia audits but does not train: a recipe naming it is refused with `not_trained`."""

    pretrained = True
    not_trained: ClassVar[str]

    def build(self, cfg, captions, resolution, channels):
        raise ConfigError(f"model.kind {self.name}: {self.not_trained}")


@register_target_kind
class StableDiffusionXLKind(TargetKind):
    """SDXL folders (StableDiffusionXLPipeline): fine-tuned from `model.pretrained` (in full, or with the lora
    defense) as diffusers' train_text_to_image_sdxl.py does (text encoders and VAE frozen, captions encoded by both
    text encoders, size / crop micro-conditioning of the training resolution), and audited with every attack."""

    name = "stable-diffusion-xl"
    pipeline_class = "StableDiffusionXLPipeline"
    target = SDXLTarget
    pretrained = True

    def build(self, cfg, captions, resolution, channels):
        pipe = load_stable_diffusion_xl(cfg.model.pretrained)
        for frozen in (pipe.text_encoder, pipe.text_encoder_2, pipe.vae):
            frozen.requires_grad_(False)
        denoiser = SDXLDenoiser(
            pipe.unet, pipe.text_encoder, pipe.text_encoder_2, pipe.tokenizer.model_max_length, pipe.vae_scale_factor
        )
        parts = {
            "vae": pipe.vae,
            "scheduler": pipe.scheduler,
            "force_zeros_for_empty_prompt": bool(pipe.config.get("force_zeros_for_empty_prompt", True)),
        }
        return Built(
            denoiser,
            pipe.tokenizer,
            pipe.vae,
            parts,
            noise_scheduler=DDPMScheduler.from_config(pipe.scheduler.config),
            tokenizer_2=pipe.tokenizer_2,
        )

    def save(self, built, model, cfg, folder):
        from diffusers import StableDiffusionXLPipeline

        parts = built.pipeline_parts
        StableDiffusionXLPipeline(
            vae=parts["vae"],
            text_encoder=model.text_encoder,
            text_encoder_2=model.text_encoder_2,
            tokenizer=built.tokenizer,
            tokenizer_2=built.tokenizer_2,
            unet=model.unet,
            scheduler=parts["scheduler"],
            force_zeros_for_empty_prompt=parts["force_zeros_for_empty_prompt"],
            add_watermarker=False,
        ).save_pretrained(folder, safe_serialization=True)


@register_target_kind
class StableDiffusion3Kind(AuditOnlyKind):
    """Stable Diffusion 3 folders (StableDiffusion3Pipeline): a flow-matching transformer, audited black-box
    (targets/flow.py); the DDPM-based gray-box attacks are refused by name, and fine-tuning is not built."""

    name = "stable-diffusion-3"
    pipeline_class = FlowMatchTarget.pipeline_class
    target = FlowMatchTarget
    not_trained = (
        "fine-tuning a flow-matching model in diffmia's training loop is not supported; audit an SD3 folder "
        "black-box through `diffmia audit --access black-box`"
    )


@register_target_kind
class FluxKind(AuditOnlyKind):
    """Flux folders (FluxPipeline): a flow-matching transformer on packed latents with guidance embeddings, audited
    black-box (targets/flow.py); the DDPM-based gray-box attacks are refused by name, and fine-tuning is not built."""

    name = "flux"
    pipeline_class = FluxTarget.pipeline_class
    target = FluxTarget
    not_trained = (
        "fine-tuning a flow-matching model in diffmia's training loop is not supported; audit a Flux folder "
        "black-box through `diffmia audit --access black-box`"
    )


ADAPTER_MARK = "diffmia-adapter.json"  # a run's target saved as a LoRA on a base (targets/command.py)


def load_adapter_target(folder: Path, device) -> Target:
    """A target saved as a LoRA on a base (target/diffmia-adapter.json): the base with the LoRA merged."""
    import json

    from .adapters import apply_adapter

    mark = json.loads((folder / ADAPTER_MARK).read_text())
    target = load_target(mark["base"], device)
    apply_adapter(target, folder / mark.get("adapter", "."))
    return target


def load_target(folder: str | Path, device: str | torch.device = "cpu") -> Target:
    """Open a saved target folder as the Target its pipeline class calls for (after read_model_index has checked
    that the folder asks for no code of its own)."""
    folder = Path(folder)
    index = folder / "model_index.json"
    if not index.is_file() and (folder / ADAPTER_MARK).is_file():
        return load_adapter_target(folder, device)
    kind = read_model_index(folder)["_class_name"]
    check_component_sizes(folder)
    found = kind_of_folder(kind)
    if found is None:
        known = ", ".join(f"{k.pipeline_class} ({k.name})" for k in TARGETS.load_all().values())
        raise ModelError(f"{index}: pipeline class {kind!r} is not a known target kind ({known})")
    try:
        return found().load(folder, device)
    except ModelError:
        raise
    except (OSError, ValueError, RuntimeError, KeyError, EnvironmentError) as exc:
        # diffusers / safetensors on a missing, truncated or corrupt weight file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(
            f"{folder}: cannot load the {kind} weights ({type(exc).__name__}: {first[:300]}); the folder is "
            f"incomplete or corrupt: retrain it or restore it from a copy"
        ) from None
