"""The Target interface: the one narrow object attacks see (STYLE.md "One narrow interface in the middle").

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


@dataclass
class QueryCounter:
    """Counts model calls: `forward_passes` batched calls and `sample_queries` per-image evaluations."""

    forward_passes: int = 0
    sample_queries: int = 0

    def add(self, batch_size: int) -> None:
        self.forward_passes += 1
        self.sample_queries += int(batch_size)

    def reset(self) -> None:
        self.forward_passes = self.sample_queries = 0


class Target:
    """Base class. Subclasses implement `_forward`; everything else here is shared."""

    latent: bool = False
    conditional: bool = False

    def __init__(self, noise_scheduler: DDPMScheduler, device: str | torch.device = "cpu"):
        self.noise_scheduler = noise_scheduler
        self.device = torch.device(device)
        self.alphas_cumprod = noise_scheduler.alphas_cumprod.to(torch.float64)
        self.num_train_timesteps = int(noise_scheduler.config.num_train_timesteps)
        self.queries = QueryCounter()

    # -- the calls attacks make --------------------------------------------------------------------------------
    @torch.no_grad()
    def predict_noise(self, x_t: torch.Tensor, t: int | torch.Tensor, cond: Sequence[str] | None = None) -> torch.Tensor:
        """eps_theta(x_t, t[, cond]) for a batch; `t` is an int or a (B,) tensor of timesteps. Counted."""
        if isinstance(t, int) or (torch.is_tensor(t) and t.ndim == 0):
            t = torch.full((len(x_t),), int(t), dtype=torch.long)
        self.queries.add(len(x_t))
        out = self._forward(x_t.to(self.device), t.to(self.device), cond)
        return out.float().cpu()

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] -> the space the diffusion runs in (identity for pixel models)."""
        return images

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return latents

    def alpha_bar(self, t: int) -> float:
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
    ) -> torch.Tensor:
        """Draw `n` images in [-1, 1] (DDIM with eta=0, or ancestral DDPM), every denoising call counted."""
        if sampler not in ("ddim", "ddpm"):
            raise ValueError(f"sampler must be 'ddim' or 'ddpm', got {sampler!r}")
        if prompts is not None and len(prompts) != n:
            raise ValueError(f"{len(prompts)} prompts for {n} images")
        scheduler_cls = DDIMScheduler if sampler == "ddim" else DDPMScheduler
        scheduler = scheduler_cls.from_config(self.noise_scheduler.config)
        generator = generator or torch.Generator().manual_seed(0)
        out = []
        for start in range(0, n, batch_size):
            count = min(batch_size, n - start)
            cond = list(prompts[start : start + count]) if prompts is not None else None
            x = torch.randn((count, *self.sample_shape), generator=generator)
            scheduler.set_timesteps(steps)
            for t in scheduler.timesteps:
                eps = self.predict_noise(x, int(t), cond)
                x = scheduler.step(eps, t, x, generator=generator).prev_sample
            out.append(self.decode(x).clamp(-1, 1))
        return torch.cat(out)

    # -- what subclasses provide -------------------------------------------------------------------------------
    @property
    def sample_shape(self) -> tuple[int, ...]:
        raise NotImplementedError

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
