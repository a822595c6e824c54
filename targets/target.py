"""The Target interface: the one narrow object attacks see, whatever kind of model is behind it.

A target exposes its noise schedule (alphas_cumprod), `predict_noise(x_t, t, cond)`, `encode`/`decode` (identity for
pixel models; a latent model maps images to latents and back), `generate` for black-box attacks, and a
`QueryCounter` that every model call goes through. Attacks never touch the UNet directly, so text-conditioned and
latent targets plug in by subclassing `Target` without changing any attack.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from diffusers import DDIMScheduler, DDPMScheduler, UNet2DModel

from diffmia.core.devices import to_device


def check_generation(n: int, prompts, sampler: str) -> None:
    """The arguments every target's `generate` refuses: an unknown sampler, a number of prompts other than `n`."""
    if sampler not in ("ddim", "ddpm"):
        raise ValueError(f"sampler must be 'ddim' or 'ddpm', got {sampler!r}")
    if prompts is not None and len(prompts) != n:
        raise ValueError(f"{len(prompts)} prompts for {n} images")


@dataclass
class QueryCounter:
    """Counts model calls: `forward_passes` batched calls and `sample_queries` per-image evaluations; and
    `generations`, images produced by generate() or vary() (what a black-box attacker pays for)."""

    forward_passes: int = 0
    sample_queries: int = 0
    generations: int = 0

    def add(self, batch_size: int) -> None:
        self.forward_passes += 1
        self.sample_queries += int(batch_size)

    def reset(self) -> None:
        self.forward_passes = self.sample_queries = self.generations = 0


PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")


class PredictionTypeError(ValueError):
    """A scheduler whose prediction type diffmia cannot turn into a noise prediction."""


def check_prediction_type(kind: str, where: str = "the scheduler") -> str:
    if kind not in PREDICTION_TYPES:
        raise PredictionTypeError(
            f"{where}: prediction_type {kind!r} is not one diffmia converts to a noise prediction "
            f"({', '.join(PREDICTION_TYPES)}); the gray-box attacks assume a DDPM noise schedule"
        )
    return kind


def epsilon_from(kind: str, out: torch.Tensor, x_t: torch.Tensor, alpha_bar: torch.Tensor) -> torch.Tensor:
    """A model output of prediction type `kind` as the noise it implies, with abar_t per sample (B,):
    epsilon: as it is; v_prediction (v = sqrt(abar) eps - sqrt(1 - abar) x0): eps = sqrt(abar) v + sqrt(1 - abar) x_t;
    sample (x0): eps = (x_t - sqrt(abar) x0) / sqrt(1 - abar). Differentiable (GSA takes gradients through it)."""
    if kind == "epsilon":
        return out
    shape = (-1,) + (1,) * (out.ndim - 1)
    a = alpha_bar.to(device=out.device, dtype=torch.float32).reshape(shape)
    out32, x32 = out.float(), x_t.float()
    if kind == "v_prediction":
        return a.sqrt() * out32 + (1 - a).sqrt() * x32
    if kind == "sample":
        return (x32 - a.sqrt() * out32) / (1 - a).sqrt()
    raise PredictionTypeError(f"prediction_type {kind!r} is not one of {', '.join(PREDICTION_TYPES)}")


def add_noise(target: "Target", x0: torch.Tensor, eps: torch.Tensor, t: int) -> torch.Tensor:
    """x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps."""
    abar = target.alpha_bar(t)
    return abar**0.5 * x0 + (1.0 - abar) ** 0.5 * eps


def ddim_move(x_t: torch.Tensor, eps: torch.Tensor, alpha_bar_from: float, alpha_bar_to: float) -> torch.Tensor:
    """Deterministic DDIM (eta=0) between any two noise levels, in either direction, given eps at the start:
    x0_hat = (x_t - sqrt(1 - abar_from) eps) / sqrt(abar_from);  x_to = sqrt(abar_to) x0_hat + sqrt(1 - abar_to) eps."""
    x0_hat = (x_t - (1.0 - alpha_bar_from) ** 0.5 * eps) / alpha_bar_from**0.5
    return alpha_bar_to**0.5 * x0_hat + (1.0 - alpha_bar_to) ** 0.5 * eps


class Target:
    """A diffusion model as attacks see it: noise predictions, encoding, generation, and a counter of every call.

    Every target kind (pixel UNet, text-conditioned UNet, Stable Diffusion) subclasses it and implements `_forward`
    and `sample_shape`; attacks use only the methods below, so an attack runs on every kind of target.

    Args:
        noise_scheduler: The diffusers DDPM scheduler the model was trained with (its `alphas_cumprod` fix the noise
            levels attacks query at).
        device: Where the denoiser runs. Inputs may be on the CPU or the device; predictions, encodings and
            variations stay on the device (an attack's arithmetic runs there, only its scores come back);
            `generate` returns its images on the CPU.
    """

    latent: bool = False
    conditional: bool = False
    default_guidance_scale: float = 1.0  # black-box attacks' guidance unless given (small targets: no CFG)

    def __init__(self, noise_scheduler: DDPMScheduler, device: str | torch.device = "cpu"):
        self.noise_scheduler = noise_scheduler
        self.device = torch.device(device)
        self.alphas_cumprod = noise_scheduler.alphas_cumprod.to(torch.float64)
        self.num_train_timesteps = int(noise_scheduler.config.num_train_timesteps)
        # what the denoiser outputs; every prediction is turned into the noise it implies (epsilon_from)
        self.prediction_type = check_prediction_type(
            str(noise_scheduler.config.get("prediction_type", "epsilon") or "epsilon")
        )
        self.queries = QueryCounter()

    # -- the calls attacks make --------------------------------------------------------------------------------
    @torch.no_grad()
    def predict_noise(
        self, x_t: torch.Tensor, t: int | torch.Tensor, cond: Sequence[str] | None = None
    ) -> torch.Tensor:
        """The model's noise prediction eps_theta(x_t, t[, cond]) for a batch; one counted query per image.

        Args:
            x_t: Noised samples, (B, *sample_shape), in the space the diffusion runs in (see `encode`).
            t: One timestep for the whole batch, or a (B,) tensor of timesteps.
            cond: One caption per image for text-conditioned targets, else None.

        Returns:
            The predicted noise, (B, *sample_shape), float32 on the target's device: a v- or sample-prediction
            model's output converted to the noise it implies (`epsilon_from`, from the scheduler's prediction_type).
        """
        if isinstance(t, int) or (torch.is_tensor(t) and t.ndim == 0):
            t = torch.full((len(x_t),), int(t), dtype=torch.long)
        self.queries.add(len(x_t))
        x_dev = to_device(x_t, self.device)
        with self.autocast():
            out = self._forward(x_dev, to_device(t, self.device), cond)
        return self.to_epsilon(out, x_dev, t).float()

    def autocast(self):
        """torch.autocast at the precision set_precision chose; no context at all in fp32 (any device type)."""
        import contextlib

        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def to_epsilon(self, out: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The denoiser's raw output as a noise prediction (identity for epsilon-prediction models)."""
        if self.prediction_type == "epsilon":
            return out
        return epsilon_from(self.prediction_type, out, x_t, self.alphas_cumprod[t.long().cpu()])

    autocast_dtype: torch.dtype | None = None  # set by set_precision: bf16 / fp16 inference for attacks and FID

    def set_precision(self, precision: str) -> None:
        """fp32 (default, exact), bf16 or fp16: the denoiser runs under torch.autocast; results come back in fp32."""
        choices = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
        if precision not in choices:
            raise ValueError(f"precision must be one of {', '.join(choices)}, got {precision!r}")
        self.autocast_dtype = choices[precision]

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1], (B, C, H, W) -> the space the diffusion runs in (identity for pixel models, the VAE's
        scaled latents for latent ones), on the target's device."""
        return to_device(images, self.device)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """The inverse of `encode`: samples of the diffusion space -> images in [-1, 1], on the target's device."""
        return to_device(latents, self.device)

    def alpha_bar(self, t: int) -> float:
        """The cumulative signal level abar_t of the training schedule: x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps."""
        return float(self.alphas_cumprod[int(t)])

    def timestep_for_sigma(self, sigma: float) -> int:
        """The timestep whose noise std sqrt(1 - abar_t) is nearest to `sigma`."""
        stds = (1.0 - self.alphas_cumprod).sqrt()
        return int((stds - sigma).abs().argmin())

    @torch.no_grad()
    def generate(
        self,
        n: int,
        prompts: Sequence[str] | None = None,
        steps: int = 50,
        sampler: str = "ddim",
        generator: torch.Generator | None = None,
        batch_size: int = 256,
        guidance_scale: float = 1.0,
        initial_noise: torch.Tensor | None = None,
        progress: bool = False,
    ) -> torch.Tensor:
        """Draw `n` images (DDIM with eta=0, or ancestral DDPM), every denoising call counted.

        Args:
            n: Number of images.
            prompts: One caption per image (text-conditioned targets), else None.
            steps: Sampling steps.
            sampler: "ddim" or "ddpm".
            generator: Seeds the initial noise (and DDPM's steps); default seed 0.
            batch_size: Images denoised at once.
            guidance_scale: Classifier-free guidance for text targets (two calls per step when not 1).
            initial_noise: Per-image starting noise (attacks seed it per image), instead of the generator's.
            progress: Show a progress bar.

        Returns:
            Images in [-1, 1], (n, C, H, W), on the CPU.

        Raises:
            ValueError: An unknown sampler, or a number of prompts other than `n`.
        """
        check_generation(n, prompts, sampler)
        scheduler_cls = DDIMScheduler if sampler == "ddim" else DDPMScheduler
        # the sampler is handed noise predictions (predict_noise converts), whatever the model outputs
        scheduler = scheduler_cls.from_config(self.noise_scheduler.config, prediction_type="epsilon")
        generator = generator or torch.Generator().manual_seed(0)
        out = []
        from tqdm.auto import tqdm

        bar = tqdm(total=n * steps, desc="sampling", unit="step", disable=not progress, unit_scale=False)
        for start in range(0, n, batch_size):
            count = min(batch_size, n - start)
            cond = list(prompts[start : start + count]) if prompts is not None else None
            if initial_noise is not None:  # per-sample noise from the caller (attacks seed it per image)
                x = initial_noise[start : start + count].clone()
            else:
                x = torch.randn((count, *self.sample_shape), generator=generator)
            x = to_device(x, self.device)  # the denoising loop runs on the device; the images come back
            scheduler.set_timesteps(steps)
            for t in scheduler.timesteps:
                eps = self.guided_noise(x, int(t), cond, guidance_scale)
                x = scheduler.step(eps, t, x, generator=generator).prev_sample
                bar.update(count)
            out.append(self.decode(x).clamp(-1, 1).cpu())
            self.queries.generations += count
        bar.close()
        return torch.cat(out)

    def queries_per_step(self, guidance_scale: float) -> int:
        """Denoiser calls per image per sampling step: two under classifier-free guidance of a text target."""
        return 2 if self.conditional and guidance_scale != 1.0 else 1

    def guided_noise(self, x, t: int, cond, guidance_scale: float) -> torch.Tensor:
        eps = self.predict_noise(x, t, cond)
        if self.conditional and cond is not None and guidance_scale != 1.0:
            uncond = self.predict_noise(x, t, [""] * len(x))
            eps = uncond + guidance_scale * (eps - uncond)
        return eps

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
        """Image variation (img2img): noise `images` to `timestep`, then DDIM back to 0. Every call is counted.

        Args:
            images: Images in [-1, 1], (B, C, H, W).
            timestep: How far to noise them.
            steps: DDIM steps back to t = 0.
            noise: The noise, shaped like the encoded images, (B, *sample_shape).
            prompts: One caption per image (text-conditioned targets), else None.
            guidance_scale: Classifier-free guidance for text targets.

        Returns:
            The varied images in [-1, 1], (B, C, H, W), on the target's device.
        """
        x = add_noise(self, self.encode(to_device(images, self.device)), to_device(noise, self.device), timestep)
        ts = [int(round(timestep * (1 - i / steps))) for i in range(steps)] + [-1]
        for cur, nxt in zip(ts[:-1], ts[1:]):
            eps = self.guided_noise(x, cur, prompts, guidance_scale)
            x = ddim_move(x, eps, self.alpha_bar(cur), self.alpha_bar(nxt) if nxt >= 0 else 1.0)
        self.queries.generations += len(images)
        return self.decode(x).clamp(-1, 1)

    # -- what subclasses provide -------------------------------------------------------------------------------
    @property
    def sample_shape(self) -> tuple[int, ...]:
        raise NotImplementedError

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the images the model takes (the latent shape times the VAE's scale for latent models)."""
        return tuple(self.sample_shape)

    def _forward(self, x_t: torch.Tensor, t: torch.Tensor, cond: Sequence[str] | None) -> torch.Tensor:
        raise NotImplementedError


class AlternatingUNet(torch.nn.Module):
    """Two UNets answering in turn, one model call each (the DualMD defense). Looks like one UNet2DModel."""

    def __init__(self, first: UNet2DModel, second: UNet2DModel):
        super().__init__()
        self.unets = torch.nn.ModuleList([first, second])
        self.config = first.config
        self.calls = 0

    def forward(self, x_t, t):
        unet = self.unets[self.calls % 2]
        self.calls += 1
        return unet(x_t, t)


class PixelDDPMTarget(Target):
    """An unconditional pixel-space DDPM (diffusers UNet2DModel + DDPMScheduler)."""

    def __init__(self, unet: UNet2DModel, noise_scheduler: DDPMScheduler, device: str | torch.device = "cpu"):
        super().__init__(noise_scheduler, device)
        self.unet = unet.to(self.device).eval()

    @classmethod
    def from_folder(cls, folder: str | Path, device: str | torch.device = "cpu") -> "PixelDDPMTarget":
        folder = Path(folder)
        if not (folder / "model_index.json").is_file():
            raise FileNotFoundError(f"{folder}: not a saved diffusers target (model_index.json missing)")
        unet = UNet2DModel.from_pretrained(folder, subfolder="unet", use_safetensors=True)
        if (folder / "dual.json").is_file():  # DualMD: a second UNet answers every other call
            unet = AlternatingUNet(unet, UNet2DModel.from_pretrained(folder, subfolder="unet_b", use_safetensors=True))
        scheduler = DDPMScheduler.from_pretrained(folder, subfolder="scheduler")
        return cls(unet, scheduler, device)

    @property
    def sample_shape(self) -> tuple[int, ...]:
        size = self.unet.config.sample_size
        return (self.unet.config.in_channels, size, size)

    def _forward(self, x_t: torch.Tensor, t: torch.Tensor, cond: Sequence[str] | None) -> torch.Tensor:
        return self.unet(x_t, t).sample


class TextTarget(Target):
    """A text-conditioned model (UNet2DConditionModel + CLIP text encoder); `cond` is a list of captions, None or ""
    meaning the empty caption. Text features are cached per caption."""

    conditional = True

    def __init__(self, unet, text_encoder, tokenizer, noise_scheduler, device="cpu"):
        super().__init__(noise_scheduler, device)
        self.unet = unet.to(self.device).eval()
        self.text_encoder = text_encoder.to(self.device).eval()
        self.tokenizer = tokenizer
        self._features: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def text_features(self, captions: Sequence[str]) -> torch.Tensor:
        from .text import tokenize

        missing = sorted({c for c in captions if c not in self._features})
        if missing:
            feats = self.text_encoder(tokenize(self.tokenizer, missing).to(self.device))[0]
            self._features.update(zip(missing, feats))
        return torch.stack([self._features[c] for c in captions])

    @property
    def sample_shape(self) -> tuple[int, ...]:
        c = self.unet.config
        return (c.in_channels, c.sample_size, c.sample_size)

    def pad_text(self, word: str) -> str:
        """What replaces `word` to pad it out in place: one pad (end-of-text) token per token of the word, so the
        words after it keep their token positions (CLiD's reduced captions)."""
        pad = self.tokenizer.pad_token or self.tokenizer.eos_token
        return " ".join([pad] * max(1, len(self.tokenizer.tokenize(word))))

    def vocabulary(self) -> set[str] | None:
        """The words this target's tokenizer encodes without [UNK]; None for an open (byte-level BPE) vocabulary."""
        unk = self.tokenizer.unk_token_id
        if unk is None or unk not in self.tokenizer("zqxjv", add_special_tokens=False).input_ids:
            return None  # an unseen word still encodes: any word may be used
        special = set(self.tokenizer.all_special_tokens)
        return {w for w in self.tokenizer.get_vocab() if w not in special}

    def _forward(self, x_t, t, cond):
        cond = list(cond) if cond is not None else [""] * len(x_t)
        return self.unet(x_t, t, encoder_hidden_states=self.text_features(cond)).sample

    @classmethod
    def from_folder(cls, folder, device="cpu"):
        from .text import DigitsTextPipeline

        pipe = DigitsTextPipeline.from_pretrained(folder, use_safetensors=True, trust_remote_code=False)
        return cls(
            pipe.unet, pipe.text_encoder, pipe.tokenizer, DDPMScheduler.from_config(pipe.scheduler.config), device
        )


class LatentTextTarget(TextTarget):
    """Stable Diffusion: the diffusion runs on VAE latents (scaled by the VAE's scaling factor)."""

    latent = True
    default_guidance_scale = 7.5  # Stable Diffusion's own default, as the official attack code runs it

    def __init__(self, unet, text_encoder, tokenizer, noise_scheduler, vae, device="cpu"):
        super().__init__(unet, text_encoder, tokenizer, noise_scheduler, device)
        self.vae = vae.to(self.device).eval()
        self.scaling_factor = float(vae.config.scaling_factor)

    @torch.no_grad()
    def encode(self, images):
        return (self.vae.encode(to_device(images, self.device)).latent_dist.mean * self.scaling_factor).float()

    @torch.no_grad()
    def decode(self, latents):
        return self.vae.decode(to_device(latents, self.device) / self.scaling_factor).sample.float()

    @property
    def vae_scale(self) -> int:
        """How many pixels one latent covers per side: 2 per VAE down level, as the pipelines' vae_scale_factor."""
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        size = self.unet.config.sample_size * self.vae_scale
        return (int(self.vae.config.in_channels), size, size)

    @classmethod
    def from_folder(cls, folder, device="cpu"):
        from .denoiser import load_stable_diffusion

        pipe = load_stable_diffusion(str(folder))
        scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
        return cls(pipe.unet, pipe.text_encoder, pipe.tokenizer, scheduler, pipe.vae, device)


class SDXLTarget(LatentTextTarget):
    """Stable Diffusion XL: two text encoders whose penultimate hidden states are concatenated, the second one's
    pooled (projected) embedding and the size / crop micro-conditioning (original size = target size = the image
    size, crop (0, 0), as the pipeline samples) passed to the UNet as added conditions. The empty caption maps to
    zero embeddings where the pipeline says so (`force_zeros_for_empty_prompt`), as its own classifier-free guidance
    does. Every attack sees it through `predict_noise` like any other latent text target."""

    def __init__(
        self,
        unet,
        text_encoder,
        text_encoder_2,
        tokenizer,
        tokenizer_2,
        noise_scheduler,
        vae,
        device="cpu",
        force_zeros_for_empty_prompt: bool = True,
    ):
        super().__init__(unet, text_encoder, tokenizer, noise_scheduler, vae, device)
        self.text_encoder_2 = text_encoder_2.to(self.device).eval()
        self.tokenizer_2 = tokenizer_2
        self.force_zeros = bool(force_zeros_for_empty_prompt)
        self._pooled: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def text_features(self, captions: Sequence[str]) -> torch.Tensor:
        from .denoiser import sdxl_text_features
        from .text import tokenize

        missing = sorted({c for c in captions if c not in self._features})
        if missing:
            feats, pooled = sdxl_text_features(
                self.text_encoder,
                self.text_encoder_2,
                tokenize(self.tokenizer, missing).to(self.device),
                tokenize(self.tokenizer_2, missing).to(self.device),
            )
            for caption, f, p in zip(missing, feats, pooled):
                if caption == "" and self.force_zeros:
                    f, p = torch.zeros_like(f), torch.zeros_like(p)
                self._features[caption], self._pooled[caption] = f, p
        return torch.stack([self._features[c] for c in captions])

    def _forward(self, x_t, t, cond):
        from .denoiser import sdxl_time_ids

        cond = list(cond) if cond is not None else [""] * len(x_t)
        feats = self.text_features(cond)
        pooled = torch.stack([self._pooled[c] for c in cond])
        added = {"text_embeds": pooled, "time_ids": sdxl_time_ids(x_t, self.vae_scale, feats.dtype)}
        return self.unet(x_t, t, encoder_hidden_states=feats, added_cond_kwargs=added).sample

    @classmethod
    def from_folder(cls, folder, device="cpu"):
        from .denoiser import load_stable_diffusion_xl

        pipe = load_stable_diffusion_xl(str(folder))
        return cls(
            pipe.unet,
            pipe.text_encoder,
            pipe.text_encoder_2,
            pipe.tokenizer,
            pipe.tokenizer_2,
            DDPMScheduler.from_config(pipe.scheduler.config),
            pipe.vae,
            device,
            force_zeros_for_empty_prompt=pipe.config.get("force_zeros_for_empty_prompt", True),
        )
