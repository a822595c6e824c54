"""The one training loop: noise-prediction (DDPM) training on accelerate, resumable, deterministic.

Follows the shape of diffusers' train_unconditional.py: Accelerator (mixed precision, gradient accumulation),
DDPMScheduler.add_noise, MSE on the noise, EMA weights (diffusers EMAModel), gradient clipping, checkpoints through
accelerate's save_state. Data order and noise are drawn from generators seeded by (seed, step, process), not from
global RNG state, so a run killed and resumed from a checkpoint reaches the same weights as an uninterrupted run.
Each process takes its own slice of every global batch, so `accelerate launch --num_processes N` trains as well.
"""
from __future__ import annotations

import copy
import json
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import set_seed
from diffusers import DDPMPipeline
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel
from tqdm.auto import tqdm

from diffmia.config import TargetConfig, dump_config
from diffmia.io import JsonLinesLog, atomic_dir, read_json, write_json, write_yaml
from diffmia.rundir import RunDir

from .data import ImageSet, load_dataset
from .manifest import SplitManifest
from .models import build_scheduler, build_unet


class TrainingError(RuntimeError):
    pass


def step_seed(*parts: int) -> int:
    """A 63-bit seed derived from integers (seed, step, ...) with numpy's SeedSequence."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(2, dtype=np.uint64)[0] >> 1)


class EpochSampler:
    """Global batch b covers positions b*G .. b*G+G-1 of an endless stream of seeded per-epoch permutations."""

    def __init__(self, n: int, global_batch: int, seed: int):
        self.n, self.global_batch, self.seed = n, global_batch, seed
        self._perms: dict[int, np.ndarray] = {}

    def _perm(self, epoch: int) -> np.ndarray:
        if epoch not in self._perms:
            self._perms = {epoch: np.random.default_rng(step_seed(self.seed, epoch)).permutation(self.n)}
        return self._perms[epoch]

    def batch(self, index: int) -> np.ndarray:
        pos = index * self.global_batch + np.arange(self.global_batch)
        return np.array([self._perm(int(p // self.n))[p % self.n] for p in pos])


def prepare_run(cfg: TargetConfig, run: RunDir, resume: bool) -> tuple[ImageSet, SplitManifest]:
    """Write (or, on resume, check) the resolved config and the split manifest; return the data and split."""
    resolved = dump_config(cfg)
    if run.config.exists():
        saved = _read_yaml(run.config)
        if not resume:
            raise TrainingError(f"{run.root}: already holds a run; pass --resume to continue it or choose another --out")
        if _without_steps(saved) != _without_steps(resolved):
            raise TrainingError(f"{run.config}: the saved config differs from this one; resume needs the same recipe")
    images = load_dataset(cfg.data)
    if run.manifest.exists() and resume:
        manifest = SplitManifest.load(run.manifest)
        manifest.verify(images, source=str(run.manifest))
    else:
        dataset = {"name": cfg.data.dataset, "path": cfg.data.path, "resolution": cfg.data.resolution}
        manifest = SplitManifest.create(
            images, cfg.data.members, cfg.data.nonmembers, cfg.seed, cfg.data.calibration_fraction, dataset
        )
    run.root.mkdir(parents=True, exist_ok=True)
    write_yaml(run.config, resolved)
    manifest.save(run.manifest)
    return images, manifest


def _read_yaml(path: Path) -> dict[str, Any]:
    import yaml

    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _without_steps(cfg: dict[str, Any]) -> dict[str, Any]:
    cfg = copy.deepcopy(cfg)
    cfg.get("train", {}).pop("steps", None)
    return cfg


def latest_checkpoint(run: RunDir) -> Path | None:
    if not run.checkpoints.is_dir():
        return None
    done = sorted(p for p in run.checkpoints.glob("step-*") if (p / "step.json").is_file())
    return done[-1] if done else None


def train_target(
    cfg: TargetConfig,
    out: str | Path,
    resume: bool = False,
    progress: bool = True,
    stop_after: int | None = None,
) -> RunDir:
    """Train the recipe `cfg` into run directory `out`. `stop_after` ends early without finishing (simulates a kill)."""
    run = RunDir(out)
    if resume and run.is_trained():
        return run
    tc = cfg.train
    accelerator = Accelerator(
        mixed_precision=tc.mixed_precision,
        gradient_accumulation_steps=tc.gradient_accumulation_steps,
        cpu=not torch.cuda.is_available(),
    )
    if accelerator.is_main_process:
        images, manifest = prepare_run(cfg, run, resume)
    accelerator.wait_for_everyone()
    if not accelerator.is_main_process:
        images = load_dataset(cfg.data)
        manifest = SplitManifest.load(run.manifest)
    resolution = cfg.data.resolution or images.native_resolution
    members = images.tensor(manifest.indices("members"), resolution)

    set_seed(cfg.seed)
    model = build_unet(cfg.model, resolution, images.channels)
    noise_scheduler = build_scheduler(cfg.scheduler)
    optimizer = torch.optim.AdamW(model.parameters(), lr=tc.learning_rate, weight_decay=tc.weight_decay)
    lr_scheduler = get_scheduler(
        tc.lr_schedule, optimizer, num_warmup_steps=tc.warmup_steps, num_training_steps=tc.steps
    )
    ema = EMAModel(model.parameters(), decay=tc.ema_decay) if tc.use_ema else None
    model, optimizer = accelerator.prepare(model, optimizer)
    accelerator.register_for_checkpointing(lr_scheduler)
    if ema is not None:
        ema.to(accelerator.device)
        accelerator.register_for_checkpointing(ema)

    log = JsonLinesLog(run.train_log)
    start = 0
    if resume and (ckpt := latest_checkpoint(run)) is not None:
        accelerator.load_state(str(ckpt))
        start = int(read_json(ckpt / "step.json")["step"])
        if accelerator.is_main_process:
            log.truncate_after("step", start)

    world, rank = accelerator.num_processes, accelerator.process_index
    accum = tc.gradient_accumulation_steps
    sampler = EpochSampler(len(members), tc.batch_size * world, cfg.seed)
    bar = tqdm(range(start, tc.steps), initial=start, total=tc.steps, desc="train", disable=not (progress and accelerator.is_local_main_process))
    t0 = time.time()
    model.train()
    for step in bar:
        losses = []
        for micro in range(accum):
            micro_index = step * accum + micro
            idx = sampler.batch(micro_index)[rank * tc.batch_size : (rank + 1) * tc.batch_size]
            x0 = members[idx].to(accelerator.device)
            gen = torch.Generator().manual_seed(step_seed(cfg.seed, micro_index, rank, 1))
            noise = torch.randn(x0.shape, generator=gen).to(accelerator.device)
            t = torch.randint(0, noise_scheduler.config.num_train_timesteps, (len(x0),), generator=gen).to(accelerator.device)
            with accelerator.accumulate(model):
                pred = model(noise_scheduler.add_noise(x0, noise, t), t).sample
                loss = F.mse_loss(pred.float(), noise.float())
                accelerator.backward(loss)
                if accelerator.sync_gradients and tc.grad_clip:
                    accelerator.clip_grad_norm_(model.parameters(), tc.grad_clip)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            losses.append(loss.detach())
        lr_scheduler.step()
        if ema is not None:
            ema.step(model.parameters())
        loss_value = accelerator.gather(torch.stack(losses).mean()[None]).mean().item()
        bar.set_postfix(loss=f"{loss_value:.4f}")
        done = step + 1
        if accelerator.is_main_process and (done % tc.log_every == 0 or done == tc.steps):
            log.write({"step": done, "loss": loss_value, "lr": lr_scheduler.get_last_lr()[0], "seconds": time.time() - t0})
        if done % tc.checkpoint_every == 0 and done < tc.steps:
            save_checkpoint(accelerator, run, done, tc.checkpoints_kept)
        if stop_after is not None and done >= stop_after:
            bar.close()
            return run
    bar.close()

    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        unet = copy.deepcopy(accelerator.unwrap_model(model)).cpu()
        if ema is not None:
            ema.copy_to(unet.parameters())
        unet.eval()
        with atomic_dir(run.target) as tmp:
            DDPMPipeline(unet=unet, scheduler=noise_scheduler).save_pretrained(tmp, safe_serialization=True)
        gap = generalisation_gap(unet, noise_scheduler, images, manifest, resolution, tc.gap_timesteps, cfg.seed)
        write_json(run.summary, {
            "name": cfg.name,
            "steps": tc.steps,
            "train_seconds_this_session": round(time.time() - t0, 2),
            "parameters": sum(p.numel() for p in unet.parameters()),
            "ema": tc.use_ema,
            "gap": gap,
        })
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return run


def save_checkpoint(accelerator: Accelerator, run: RunDir, step: int, kept: int) -> None:
    """accelerate save_state into a temporary folder, then renamed: a kill never leaves a half checkpoint."""
    final = run.checkpoints / f"step-{step:08d}"
    tmp = run.checkpoints / f".step-{step:08d}.tmp"
    if accelerator.is_main_process and tmp.exists():
        shutil.rmtree(tmp)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    if accelerator.is_main_process:
        write_json(tmp / "step.json", {"step": step})
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        for old in sorted(run.checkpoints.glob("step-*"))[:-kept]:
            shutil.rmtree(old)
    accelerator.wait_for_everyone()


@torch.no_grad()
def denoising_loss(unet, noise_scheduler, x0: torch.Tensor, timestep: int, seed: int, batch: int = 256) -> torch.Tensor:
    """Per-image ||eps - eps_theta(x_t, t)||^2 (mean over pixels) at a fixed timestep with seeded noise."""
    gen = torch.Generator().manual_seed(step_seed(seed, timestep, 2))
    noise = torch.randn(x0.shape, generator=gen)
    out = []
    for i in range(0, len(x0), batch):
        xb, nb = x0[i : i + batch], noise[i : i + batch]
        t = torch.full((len(xb),), timestep, dtype=torch.long)
        pred = unet(noise_scheduler.add_noise(xb, nb, t), t).sample
        out.append(((pred - nb) ** 2).flatten(1).mean(1))
    return torch.cat(out)


def generalisation_gap(unet, noise_scheduler, images, manifest, resolution, timesteps, seed) -> dict[str, Any]:
    """Mean denoising loss on members and on test non-members at fixed timesteps and noise."""
    members = images.tensor(manifest.indices("members"), resolution)
    nonmembers = images.tensor(manifest.indices("nonmembers", "test"), resolution)
    rows = {}
    for t in timesteps:
        m = denoising_loss(unet, noise_scheduler, members, t, seed).mean().item()
        n = denoising_loss(unet, noise_scheduler, nonmembers, t, seed).mean().item()
        rows[str(t)] = {"members": round(m, 6), "nonmembers_test": round(n, 6), "ratio": round(n / max(m, 1e-12), 4)}
    return rows
