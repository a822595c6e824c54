"""Noise regularisation: input perturbation and Gaussian noise on the training images.

- `input_perturbation` (Ning et al., "Input Perturbation Reduces Exposure Bias in Diffusion Models", 2023; diffusers'
  --input_perturbation, gamma=0.1): x_t is built from eps + gamma * xi, xi ~ N(0, I), while the loss target stays eps.
- `image_noise`: Gaussian noise of std `std` added to every training image at every step (data augmentation by noise,
  in the spirit of Somepalli et al., arXiv 2305.20086). Both are empirical defenses with no formal guarantee: the
  report shows them beside DP (Aerni et al., arXiv 2404.17399).
"""

from __future__ import annotations

import torch
from pydantic import Field

from .base import Defense, DefenseParams, register_defense


class InputPerturbationParams(DefenseParams):
    gamma: float = Field(0.1, gt=0.0, le=2.0, description="std of the extra noise in x_t")


@register_defense
class InputPerturbation(Defense):
    name = "input_perturbation"
    paper = "Ning et al., Input Perturbation Reduces Exposure Bias in Diffusion Models (ICML 2023)"
    Params = InputPerturbationParams
    stage = "step"

    def perturb(self, x0, noise, gen):
        return x0, noise + self.params.gamma * torch.randn(noise.shape, generator=gen)


class ImageNoiseParams(DefenseParams):
    std: float = Field(0.1, gt=0.0, le=2.0, description="std of the noise added to images in [-1, 1]")


@register_defense
class ImageNoise(Defense):
    name = "image_noise"
    paper = "Somepalli et al., Understanding and Mitigating Copying in Diffusion Models, arXiv 2305.20086"
    Params = ImageNoiseParams
    stage = "step"

    def perturb(self, x0, noise, gen):
        return x0 + self.params.std * torch.randn(x0.shape, generator=gen), noise
