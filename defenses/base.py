"""The defense contract. A defense transforms the training recipe at fixed stages of the one training loop:

1. `training_set(x, origins, ctx)`: the images trained on (deduplication removes rows here);
2. `build_model(model, ctx)`: the network (LoRA wraps it, a public base replaces its initial weights);
3. `perturb(x0, noise, gen)`: per step, the clean images and the noise that builds x_t (noise regularisation);
4. a privacy engine (DP-SGD) replaces batch sampling, per-example gradients and the optimizer step.

Each defense has validated parameters, a paper, and `info()` for the manifest and the report. Recipes list them as
`defenses: [{name: dp_sgd, epsilon: 10}, ...]`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict

from diffmia.core.config import instantiate_defenses, validate
from diffmia.defenses import DEFENSES


class DefenseParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass
class DefenseContext:
    """What a defense may look at while the loop is being set up."""

    config: Any  # TargetConfig
    images: Any  # ImageSet
    manifest: Any  # SplitManifest
    resolution: int
    cache_dir: Path
    report: dict[str, Any] = field(default_factory=dict)  # what the defense did, for the manifest
    # the training loop itself, for defenses that train models of their own (a public base, DualMD's teachers):
    # train(cfg, folder, resume=..., progress=..., train_on=..., cache_dir=...) -> RunDir, and its per-step seeds
    train: Any = None
    step_seed: Any = None


class Defense:
    """A change to the training recipe at one stage of the training loop, with a strength to sweep.

    Subclasses set `name`, `paper`, `Params` and `stage` ("data", "model", "step" or "privacy") and override the
    hook of their stage; the others pass everything through unchanged.

    Args:
        params: The defense's parameters (a dict is validated against `Params`; unknown keys are refused).

    Raises:
        ConfigError: A parameter is unknown or out of range.
    """

    name: ClassVar[str]
    paper: ClassVar[str]
    Params: ClassVar[type[DefenseParams]]
    stage: ClassVar[str]  # "data", "model", "step" or "privacy": for docs and ordering
    text_only: ClassVar[bool] = False  # acts on captions / text features: refused for unconditional targets
    token_level: bool = False  # rewrites single token ids: refused where captions have two tokenizations (SDXL)

    def __init__(self, params: DefenseParams | dict[str, Any] | None = None):
        if not isinstance(params, DefenseParams):
            params = validate(dict(params or {}), self.Params, source=f"defense {self.name}")
        self.params = params

    def training_set(
        self, x: torch.Tensor, origins: np.ndarray, ctx: DefenseContext
    ) -> tuple[torch.Tensor, np.ndarray]:
        """Stage "data": the images trained on.

        Args:
            x: The training images, (N, C, H, W) in [-1, 1] (members, injected duplicates, IN canaries).
            origins: The dataset index each row came from, (N,).
            ctx: The recipe, images and manifest; record what the defense did in `ctx.report`.

        Returns:
            The images to train on and their origins (a defense that removes rows removes both).
        """
        return x, origins

    def build_model(self, model: torch.nn.Module, ctx: DefenseContext) -> torch.nn.Module:
        """Stage "model": the network before training (wrap it, or replace its initial weights).

        Args:
            model: The freshly built denoiser.
            ctx: The recipe, images, manifest and the cache folder (for a base trained once and shared).

        Returns:
            The model the loop trains.
        """
        return model

    def perturb(self, x0: torch.Tensor, noise: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Stage "step": per training step, the clean images and the noise that builds x_t.

        Args:
            x0: The batch of clean images.
            noise: The noise drawn for the batch; the loss target stays this original noise.
            gen: The loop's seeded generator: draw every random number from it.

        Returns:
            (images, noise) used to build x_t.
        """
        return x0, noise

    def prepare_training(self, ctx: DefenseContext, run_root: Path, origins: np.ndarray, device) -> None:
        """Before the loop, once the training set is final: a defense that trains models of its own (DualMD's
        teachers) trains or loads them here. `origins`: the dataset index of each training row."""

    @property
    def assembles_target(self) -> bool:
        """True for a defense whose target is made of other models instead of trained by the loop (DualMD's
        alternating teachers): the loop then calls `assemble_target` and trains nothing."""
        return False

    def assemble_target(self, cfg, folder: Path, ctx: DefenseContext) -> dict[str, Any]:
        """Write the assembled target as a pipeline folder into `folder`; return its summary fields (steps,
        trained_on, dp_epsilon, train_seconds_this_session, parameters)."""
        raise NotImplementedError

    def loss_target(self, x_t: torch.Tensor, t: torch.Tensor, rows: np.ndarray, target: torch.Tensor) -> torch.Tensor:
        """Per step, what the denoiser's prediction is regressed on (default: `target`, the noise; DistillMD: the
        prediction of the teacher that did not see each row's image)."""
        return target

    def finish_model(self, model: torch.nn.Module, run_root: Path) -> torch.nn.Module:
        """After training, on the final weights: the model that is saved as the target (LoRA saves its adapter into
        the run folder and returns the merged UNet)."""
        return model

    def perturb_captions(self, ids: torch.Tensor, pool: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """Text models, per step: the caption token ids of the batch (`pool`: every training row's ids)."""
        return ids

    def text_noise(
        self, shape: tuple[int, ...], gen: torch.Generator, current: torch.Tensor | None
    ) -> torch.Tensor | None:
        """Text models, per step: noise added to the text features (None: none)."""
        return current

    def info(self) -> dict[str, Any]:
        return {"name": self.name, **self.params.model_dump(mode="json")}


STAGE_ORDER = {"data": 0, "model": 1, "step": 2, "privacy": 3}


def register_defense(cls: type[Defense]) -> type[Defense]:
    """Class decorator: register a defense under its `name` (built-in modules and plugins alike).

    Raises:
        ValueError: Another defense has this name.
    """
    return DEFENSES.register(cls.name)(cls)


def build_defenses(entries: list[dict[str, Any]]) -> list[Defense]:
    """From the recipe's `defenses:` list, [{name: ..., param: value}, ...], the defenses in stage order.

    Raises:
        ConfigError: An entry without a name, an unknown name or parameter, or a defense listed twice.
    """
    out = instantiate_defenses(entries)
    return sorted(out, key=lambda d: STAGE_ORDER[d.stage])
