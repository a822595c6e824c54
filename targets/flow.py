"""Flow-matching text-to-image models (Stable Diffusion 3: `StableDiffusion3Pipeline`; Flux: `FluxPipeline`),
audited black-box.

A flow-matching model noises along a straight line, x_s = (1 - s) x0 + s eps for s in [0, 1], and predicts the
velocity v = eps - x0 (Lipman et al. 2210.02747; Esser et al. 2403.03206). The gray-box attacks here (naive loss,
SecMI, PIA, noise aggregation, CLiD, SimA, LiRA, RMIA, GSA, quantile regression) are built on a DDPM noise schedule
(x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps, a noise prediction, thresholds at DDPM timesteps) and no adaptation of
them to flow matching is implemented here: they are refused by name (`FlowMatchingError`). The black-box attacks run:

- `generate`: Euler steps of the pipeline's own scheduler (FlowMatchEulerDiscreteScheduler, with its shift) from
  the given noise at s = 1 to s = 0, classifier-free guidance as the pipeline applies it;
- `vary` (img2img, ReDiffuse's variations): the image's latents noised to the sigma of `timestep` / 1000 on the
  scheduler's grid (`scale_noise`, as StableDiffusion3Img2ImgPipeline does), then the last `steps` Euler steps of a
  grid of ceil(steps / strength) steps, as the img2img pipeline runs a strength below 1.

Prompts are encoded by the pipeline's own `encode_prompt` (two CLIP encoders, and T5 where the folder has one; SD3
runs without it), cached per caption. Every velocity call counts one query per image.

Flux (`FluxTarget`) differs where its pipeline does: the transformer sees the latents packed into 2 x 2 patches with
their position ids, the timestep grid is the pipeline's (sigmas linspace(1, 1/N, N), shifted by the image's sequence
length), and guidance is an input of the transformer (guidance distillation: one call per step) instead of
classifier-free guidance; a model without guidance embeddings (schnell) ignores it, as its pipeline does. Images are
audited at the pipeline's default size (default_sample_size x the VAE's scale: 1024 px for the published models).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import torch

from diffmia.core.errors import DiffmiaError

from .target import LatentTextTarget, QueryCounter, Target, check_generation, to_device


class FlowMatchingError(DiffmiaError, ValueError):
    """A DDPM-based (gray-box) query of a flow-matching model."""


GRAY_BOX_REASON = (
    "the model is flow-matching (x_s = (1 - s) x0 + s eps, velocity prediction): this attack assumes a DDPM noise "
    "schedule and noise predictions, and no adaptation to flow matching is implemented; run --access black-box"
)


class FlowMatchTarget:
    """A Stable Diffusion 3 pipeline as the black-box attacks see it (generate, vary, encode, decode)."""

    latent = True
    conditional = True
    flow_matching = True
    default_guidance_scale = 1.0
    autocast_dtype: torch.dtype | None = None

    def __init__(self, pipe, device: str | torch.device = "cpu"):
        self.pipe = pipe.to(device)
        self.transformer = pipe.transformer.eval()
        self.vae = pipe.vae.eval()
        self.noise_scheduler = pipe.scheduler
        self.device = torch.device(device)
        self.num_train_timesteps = int(self.noise_scheduler.config.num_train_timesteps)
        self.prediction_type = "flow_matching"
        self.queries = QueryCounter()
        self._prompts: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.unet = self.transformer  # what audits count parameters of and references compare
        self.text_encoder = pipe.text_encoder

    pipeline_class = "StableDiffusion3Pipeline"  # the diffusers class from_folder opens

    @classmethod
    def from_folder(cls, folder: str | Path, device: str | torch.device = "cpu") -> "FlowMatchTarget":
        import diffusers

        from .denoiser import read_model_index

        # components saved as [null, null] (SD3 without T5, no IP-adapter encoder) are passed as None
        absent = {k: None for k, v in read_model_index(folder).items() if isinstance(v, list) and v[0] is None}
        pipeline = getattr(diffusers, cls.pipeline_class)
        pipe = pipeline.from_pretrained(folder, use_safetensors=True, trust_remote_code=False, **absent)
        return cls(pipe, device)

    # -- what the gray-box attacks would need: refused by name ----------------------------------------------------
    def predict_noise(self, *args, **kwargs):
        raise FlowMatchingError(GRAY_BOX_REASON)

    def alpha_bar(self, t: int) -> float:
        raise FlowMatchingError(GRAY_BOX_REASON)

    def timestep_for_sigma(self, sigma: float) -> int:
        raise FlowMatchingError(GRAY_BOX_REASON)

    set_precision = Target.set_precision  # bf16 / fp16 autocast of the transformer, as for every target
    autocast = Target.autocast

    # -- shapes and the latent space ----------------------------------------------------------------------------
    vae_scale = LatentTextTarget.vae_scale  # pixels per latent per side, as for Stable Diffusion

    @property
    def sample_shape(self) -> tuple[int, ...]:
        size = self.transformer.config.sample_size
        return (self.transformer.config.in_channels, size, size)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        c, h, w = self.sample_shape
        return (3, h * self.vae_scale, w * self.vae_scale)

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] -> the latents the transformer runs on: (mean - shift) * scale, deterministic."""
        cfg = self.vae.config
        z = self.vae.encode(to_device(images, self.device)).latent_dist.mean
        return ((z - (cfg.shift_factor or 0.0)) * cfg.scaling_factor).float()

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        cfg = self.vae.config
        z = to_device(latents, self.device) / cfg.scaling_factor + (cfg.shift_factor or 0.0)
        return self.vae.decode(z).sample.float()

    # -- the velocity ---------------------------------------------------------------------------------------------
    def encode_prompts(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(embeddings, pooled embeddings) of `prompts` by the pipeline's own encode_prompt (every text encoder)."""
        embeds, _, pooled, _ = self.pipe.encode_prompt(
            prompts, prompts, prompts, device=self.device, do_classifier_free_guidance=False
        )
        return embeds, pooled

    def _embeds(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """The cached embeddings of `prompts`, each prompt encoded once."""
        missing = sorted({p for p in prompts if p not in self._prompts})
        if missing:
            embeds, pooled = self.encode_prompts(missing)
            for k, p in enumerate(missing):
                self._prompts[p] = (embeds[k : k + 1], pooled[k : k + 1])
        return (
            torch.cat([self._prompts[p][0] for p in prompts]),
            torch.cat([self._prompts[p][1] for p in prompts]),
        )

    @torch.no_grad()
    def velocity(self, x: torch.Tensor, t: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        """v(x_s, s) for a batch at one scheduler timestep `t` (s * 1000); one counted query per image."""
        self.queries.add(len(x))
        embeds, pooled = self._embeds([p or "" for p in prompts])
        timestep = t.expand(len(x)).to(self.device)
        with self.autocast():
            out = self.transformer(
                hidden_states=to_device(x, self.device),
                timestep=timestep,
                encoder_hidden_states=embeds,
                pooled_projections=pooled,
            ).sample
        return out.float()

    def guided_velocity(self, x, t, prompts, guidance_scale: float) -> torch.Tensor:
        v = self.velocity(x, t, prompts)
        if guidance_scale != 1.0:
            uncond = self.velocity(x, t, [""] * len(x))
            v = uncond + guidance_scale * (v - uncond)
        return v

    def queries_per_step(self, guidance_scale: float) -> int:
        """Velocity calls per image per sampling step: two under classifier-free guidance."""
        return 2 if guidance_scale != 1.0 else 1

    def _scheduler(self):
        from diffusers import FlowMatchEulerDiscreteScheduler

        return FlowMatchEulerDiscreteScheduler.from_config(self.noise_scheduler.config)

    def set_timesteps(self, scheduler, steps: int) -> None:
        """The pipeline's grid of `steps` sampling steps."""
        scheduler.set_timesteps(steps)

    # -- the calls the black-box attacks make ---------------------------------------------------------------------
    @torch.no_grad()
    def generate(
        self,
        n: int,
        prompts: Sequence[str] | None = None,
        steps: int = 28,
        sampler: str = "ddim",
        generator: torch.Generator | None = None,
        batch_size: int = 64,
        guidance_scale: float = 1.0,
        initial_noise: torch.Tensor | None = None,
        progress: bool = False,
    ) -> torch.Tensor:
        """`n` images by the flow ODE (Euler steps of the pipeline's scheduler; `sampler` "ddim" or "ddpm" both mean
        it: a flow-matching model has one deterministic sampler here)."""
        check_generation(n, prompts, sampler)
        prompts = list(prompts) if prompts is not None else [""] * n
        generator = generator or torch.Generator().manual_seed(0)
        out = []
        for start in range(0, n, batch_size):
            count = min(batch_size, n - start)
            if initial_noise is not None:
                x = initial_noise[start : start + count].clone().float()
            else:
                x = torch.randn((count, *self.sample_shape), generator=generator)
            x = to_device(x, self.device)
            scheduler = self._scheduler()
            self.set_timesteps(scheduler, steps)
            for t in scheduler.timesteps:
                v = self.guided_velocity(x, t, prompts[start : start + count], guidance_scale)
                x = scheduler.step(v, t, x).prev_sample
            out.append(self.decode(x).clamp(-1, 1).cpu())
            self.queries.generations += count
        return torch.cat(out)

    @torch.no_grad()
    def vary(
        self,
        images: torch.Tensor,
        timestep: int,
        steps: int,
        noise: torch.Tensor,
        prompts: Sequence[str] | None = None,
        guidance_scale: float = 1.0,
    ) -> torch.Tensor:
        """img2img at strength timestep / num_train_timesteps: noised to that point of the scheduler's grid, then
        `steps` Euler steps to s = 0."""
        strength = min(max(timestep / self.num_train_timesteps, 1e-3), 1.0)
        grid = max(steps, math.ceil(steps / strength))
        scheduler = self._scheduler()
        self.set_timesteps(scheduler, grid)
        timesteps = scheduler.timesteps[grid - steps :]
        scheduler.set_begin_index(grid - steps)
        prompts = list(prompts) if prompts is not None else [""] * len(images)
        x = scheduler.scale_noise(self.encode(images), timesteps[:1], to_device(noise.float(), self.device))
        for t in timesteps:
            v = self.guided_velocity(x, t, prompts, guidance_scale)
            x = scheduler.step(v, t, x).prev_sample
        self.queries.generations += len(images)
        return self.decode(x).clamp(-1, 1)


class FluxTarget(FlowMatchTarget):
    """A Flux pipeline (FluxPipeline: CLIP pooled + T5 text embeddings, a transformer on packed latents with
    guidance embeddings) as the black-box attacks see it."""

    pipeline_class = "FluxPipeline"
    default_guidance_scale = 3.5  # FluxPipeline's own default (the embedded guidance of the dev models)
    max_sequence_length = 512  # the pipeline's default T5 length

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """Unpacked latents (C, h, w) of an image of the pipeline's default size (h, w even: 2 x 2 patches)."""
        size = 2 * (int(self.pipe.default_sample_size) // 2)
        return (self.transformer.config.in_channels // 4, size, size)

    def encode_prompts(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """FluxPipeline.encode_prompt: T5 embeddings, CLIP pooled embeddings, and the text position ids (the same
        zeros for every prompt, kept for the transformer)."""
        embeds, pooled, self._text_ids = self.pipe.encode_prompt(
            prompts, prompts, device=self.device, max_sequence_length=self.max_sequence_length
        )
        return embeds, pooled

    @torch.no_grad()
    def velocity(self, x: torch.Tensor, t: torch.Tensor, prompts: Sequence[str], guidance: float = 1.0):
        """v for unpacked latents x (B, C, h, w) at scheduler timestep t, as FluxPipeline calls its transformer;
        one counted query per image."""
        self.queries.add(len(x))
        embeds, pooled = self._embeds([p or "" for p in prompts])
        x = to_device(x, self.device)
        b, c, h, w = x.shape
        packed = self.pipe._pack_latents(x, b, c, h, w)
        image_ids = self.pipe._prepare_latent_image_ids(b, h // 2, w // 2, self.device, x.dtype)
        scale = None
        if self.transformer.config.guidance_embeds:
            scale = torch.full((b,), float(guidance), device=self.device, dtype=torch.float32)
        with self.autocast():
            out = self.transformer(
                hidden_states=packed,
                timestep=t.expand(b).to(device=self.device, dtype=x.dtype) / 1000,
                guidance=scale,
                pooled_projections=pooled,
                encoder_hidden_states=embeds,
                txt_ids=self._text_ids,
                img_ids=image_ids,
                return_dict=False,
            )[0]
        return self.pipe._unpack_latents(out.float(), h * self.vae_scale, w * self.vae_scale, self.vae_scale)

    def guided_velocity(self, x, t, prompts, guidance_scale: float) -> torch.Tensor:
        return self.velocity(x, t, prompts, guidance_scale)  # guidance is the transformer's input: one call

    def queries_per_step(self, guidance_scale: float) -> int:
        return 1

    def set_timesteps(self, scheduler, steps: int) -> None:
        """FluxPipeline's grid: sigmas linspace(1, 1/N, N), shifted by mu for the image's sequence length."""
        import numpy as np
        from diffusers.pipelines.flux.pipeline_flux import calculate_shift

        _, h, w = self.sample_shape
        cfg = scheduler.config
        mu = calculate_shift(
            (h // 2) * (w // 2),
            cfg.get("base_image_seq_len", 256),
            cfg.get("max_image_seq_len", 4096),
            cfg.get("base_shift", 0.5),
            cfg.get("max_shift", 1.15),
        )
        if cfg.get("use_flow_sigmas"):
            scheduler.set_timesteps(steps, mu=mu)
        else:  # as retrieve_timesteps passes them
            scheduler.set_timesteps(sigmas=np.linspace(1.0, 1 / steps, steps), mu=mu)
