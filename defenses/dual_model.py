"""Dual-model defenses (DualMD and DistillMD, arXiv 2410.16657): two teacher models, each trained on a disjoint half
of the members through the same training loop (cached under the cache folder, shared by recipes).

- mode `alternate` (DualMD): the target is the pair; its noise predictions alternate between the two teachers from
  one model call to the next, so the k predictions an attacker collects for an image mix a model that saw it with one
  that did not. No third model is trained.
- mode `distill` (DistillMD): one student is trained on all members, its loss target for an image being the noise
  prediction of the teacher that did NOT see that image, so no single image is fitted by the model it reaches.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import Field

from .base import Defense, DefenseParams, register_defense

DUAL_MARKER = "dual.json"


class DualModelParams(DefenseParams):
    mode: Literal["alternate", "distill"] = "alternate"
    teacher_steps: int = Field(2000, ge=1, description="training steps of each teacher on its half")


@register_defense
class DualModel(Defense):
    name = "dual_model"
    paper = "Tran et al., Dual-Model Defense for diffusion models (DualMD / DistillMD), arXiv 2410.16657"
    Params = DualModelParams
    stage = "model"

    def teachers(self, ctx, run_root: Path, progress: bool = False) -> list[Path]:
        """Train (once) the two teachers; return their saved target folders."""
        from diffmia.core.config import recipe_hash

        cfg = ctx.config.model_copy(deep=True)
        cfg.defenses = []
        cfg.train.steps = self.params.teacher_steps
        cfg.name = "dual-teacher"  # the recipe's name does not change the teachers
        key = recipe_hash(cfg)
        folders = []
        for half in (0, 1):  # cached: DualMD and DistillMD recipes of one benchmark share their teachers
            run = ctx.train(
                cfg,
                ctx.cache_dir / f"dual-teachers-{key}" / f"half-{half}",
                resume=True,
                progress=progress,
                train_on=f"members-half-{half}",
                cache_dir=ctx.cache_dir,
            )
            folders.append(run.target)
        from diffmia.targets.manifest import SplitManifest

        ctx.report["dual_model"] = {
            "mode": self.params.mode,
            "teachers": [str(f) for f in folders],
            # the IN canaries each teacher saw (its half of them): the one-run audit's canaries are trained on
            "canaries_trained_by_teacher": [
                SplitManifest.load(f.parent / "manifest.json").extra.get("training_set", {}).get("canaries_trained", [])
                for f in folders
            ],
        }
        return folders

    @property
    def trains_student(self) -> bool:
        return self.params.mode == "distill"

    def prepare_training(self, ctx, run_root: Path, train_origins: np.ndarray, device) -> None:
        """Load the teachers and note which half each training row's image belongs to."""
        from diffusers import UNet2DModel

        from diffmia.core.config import ConfigError
        from diffmia.targets.trainset import canary_half, member_half

        if ctx.config.model.kind != "unet2d":
            raise ConfigError("defense dual_model: implemented for pixel DDPMs (model.kind unet2d) only")
        step_seed = ctx.step_seed
        self.folders = self.teachers(ctx, run_root)
        self.models = [
            UNet2DModel.from_pretrained(f, subfolder="unet", use_safetensors=True).to(device).eval()
            for f in self.folders
        ]
        half_one = set(member_half(ctx.manifest, ctx.config.seed, 1, step_seed)) | set(
            canary_half(ctx.manifest, ctx.config.seed, 1, step_seed)
        )  # IN canaries are split like members
        self.row_half = torch.as_tensor([1 if int(o) in half_one else 0 for o in train_origins])

    @property
    def assembles_target(self) -> bool:
        return not self.trains_student  # DualMD: the teachers are the target; DistillMD trains a student

    def assemble_target(self, cfg, folder: Path, ctx) -> dict:
        """DualMD (alternate): the target is the two teachers answering in turn, saved as one pipeline folder."""
        from diffusers import DDPMPipeline

        from diffmia.core.io import write_json
        from diffmia.targets.models import build_scheduler

        first, second = (m.cpu() for m in self.models)
        DDPMPipeline(unet=first, scheduler=build_scheduler(cfg.scheduler)).save_pretrained(
            folder, safe_serialization=True
        )
        second.save_pretrained(folder / "unet_b", safe_serialization=True)
        write_json(folder / DUAL_MARKER, {"mode": "alternate", "teachers": ctx.report["dual_model"]["teachers"]})
        return {
            "steps": self.params.teacher_steps,
            "trained_on": "members (two halves)",
            "dp_epsilon": None,
            "train_seconds_this_session": None,
            "parameters": 2 * sum(p.numel() for p in first.parameters()),
        }

    @torch.no_grad()
    def loss_target(self, x_t: torch.Tensor, t: torch.Tensor, rows: np.ndarray, noise: torch.Tensor) -> torch.Tensor:
        """For each row, the prediction of the teacher trained on the OTHER half (DistillMD)."""
        half = self.row_half[torch.as_tensor(rows)]
        target = torch.empty_like(noise)
        for teacher in (0, 1):
            pick = half != teacher  # rows this teacher never saw
            if pick.any():
                target[pick] = self.models[teacher](x_t[pick], t[pick]).sample.to(target.dtype)
        return target
