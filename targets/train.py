"""The one training loop: noise-prediction (DDPM) training on accelerate, resumable, deterministic.

Follows the shape of diffusers' train_unconditional.py: Accelerator (mixed precision, gradient accumulation),
DDPMScheduler.add_noise, MSE on the noise, EMA weights (diffusers EMAModel), gradient clipping, checkpoints through
accelerate's save_state. Data order and noise are drawn from generators seeded by (seed, step, process), not from
global RNG state, so a run killed and resumed from a checkpoint reaches the same weights as an uninterrupted run.
Each process takes its own slice of every global batch, so `accelerate launch --num_processes N` trains as well.
"""

from __future__ import annotations

import copy
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
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel
from safetensors import SafetensorError
from tqdm.auto import tqdm

from diffmia.core.config import ConfigError, TargetConfig, dump_config, load_yaml
from diffmia.core.devices import to_device
from diffmia.core.errors import DiffmiaError
from diffmia.core.io import JsonLinesLog, atomic_dir, read_json, write_json, write_yaml
from diffmia.core.registries import TARGETS
from diffmia.core.rundir import (
    RunDir,
    default_cache_dir,  # noqa: F401 - re-exported
)
from diffmia.defenses.base import DefenseContext, build_defenses

from .data import ImageSet, load_dataset
from .denoiser import caption_ids, encode_latents
from .kinds import load_target
from .manifest import SplitManifest
from .models import build_scheduler
from .target import add_noise, check_prediction_type
from .trainset import build_training_set


class TrainingError(DiffmiaError, RuntimeError):
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


def prepare_run(
    cfg: TargetConfig, run: RunDir, resume: bool, split: SplitManifest | None = None
) -> tuple[ImageSet, SplitManifest]:
    """Write (or, on resume, check) the resolved config and the split manifest; return the data and split.
    `split` is a manifest made by the caller (reference models: the recipe on another subset)."""
    resolved = dump_config(cfg)
    if run.config.exists():
        saved = _read_yaml(run.config)
        if not resume:
            raise TrainingError(
                f"{run.root}: already holds a run; pass --resume to continue it or choose another --out"
            )
        if not _same_recipe(saved, cfg):
            raise TrainingError(f"{run.config}: the saved config differs from this one; resume needs the same recipe")
    images = load_dataset(cfg.data)
    if run.manifest.exists() and resume:
        manifest = SplitManifest.load(run.manifest)
        manifest.verify(images, source=str(run.manifest))
    elif split is not None:
        manifest = split
        manifest.verify(images, source=f"{run.root}: given split")
    else:
        manifest = SplitManifest.for_recipe(images, cfg.data, cfg.seed)
    run.root.mkdir(parents=True, exist_ok=True)
    write_yaml(run.config, resolved)
    manifest.save(run.manifest)
    return images, manifest


def _train_by_command(cfg: TargetConfig, run: RunDir, resume: bool, train_on: str, split) -> RunDir:
    """A recipe trained by its command: the data and split as for any run, the model from the command's output."""
    from .command import train_by_command
    from .kinds import load_target

    retry = (run.root / "command.json").is_file()  # an earlier attempt failed: run the command again
    images, manifest = prepare_run(cfg, run, resume or retry, split)
    t0 = time.time()
    info = train_by_command(cfg, run, images, manifest, train_on)
    target = load_target(run.target)  # what it saved loads (a broken output fails here, not in an attack)
    params = sum(p.numel() for p in target.unet.parameters())
    summary = {"name": cfg.name, "trained_on": train_on, "parameters": params, "defenses": [], "dp_epsilon": None}
    summary.update(info, train_seconds_this_session=round(time.time() - t0, 1), gap=None)
    write_json(run.summary, summary)
    return run


def _read_yaml(path: Path) -> dict[str, Any]:
    return load_yaml(path.read_text(encoding="utf-8"))


def _same_recipe(saved: dict[str, Any], cfg: TargetConfig) -> bool:
    """The saved config (filled with today's defaults, so a field added since does not count) equals `cfg` but for
    train.steps (a resume may extend the training)."""
    from pydantic import ValidationError

    try:
        saved = dump_config(TargetConfig.model_validate(saved))
    except ValidationError:
        return False
    return _without_steps(saved) == _without_steps(dump_config(cfg))


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
    train_on: str = "members",
    cache_dir: str | Path | None = None,
    split: SplitManifest | None = None,
) -> RunDir:
    """Train the recipe `cfg` into run directory `out`. `stop_after` ends early without finishing (simulates a kill).
    `train_on="public"` trains on the public split instead of the members (base models for fine-tuning defenses).

    A run that fails before its first checkpoint (a bad config found late, e.g. an unreachable DP budget) leaves
    nothing behind in a folder it created; a run with checkpoints keeps them for --resume."""
    run = RunDir(out)
    if run.root.exists() and not run.root.is_dir():
        raise TrainingError(f"{run.root}: exists and is not a folder; choose another --out")
    if run.checkpoints.is_dir() and os.environ.get("RANK", "0") == "0":  # a killed checkpoint write: never read
        for stale in run.checkpoints.glob(".step-*.tmp"):
            shutil.rmtree(stale, ignore_errors=True)
    fresh = not run.root.exists() or not any(run.root.iterdir())
    existed = run.root.exists()
    try:
        return _train_target(cfg, run, resume, progress, stop_after, train_on, cache_dir, split)
    except Exception:
        kept_log = (run.root / "command.log").is_file()  # a failed training command: its log stays for the user
        if fresh and not kept_log and latest_checkpoint(run) is None and not run.is_trained() and run.root.is_dir():
            if existed:  # the user's empty folder: empty it again
                for child in run.root.iterdir():
                    shutil.rmtree(child) if child.is_dir() else child.unlink()
            else:
                shutil.rmtree(run.root, ignore_errors=True)
        raise


def _train_target(
    cfg: TargetConfig,
    run: RunDir,
    resume: bool,
    progress: bool,
    stop_after: int | None,
    train_on: str,
    cache_dir,
    split: SplitManifest | None,
) -> RunDir:
    if resume and run.is_trained():
        saved = _read_yaml(run.config) if run.config.is_file() else None
        if saved is not None and not _same_recipe(saved, cfg):
            raise TrainingError(
                f"{run.config}: this finished run was trained with a different recipe; --resume needs "
                f"the same one (choose another --out to train this recipe)"
            )
        return run
    if cfg.command is not None:  # the team's own training command (targets/command.py)
        return _train_by_command(cfg, run, resume, train_on, split)
    tc = cfg.train
    accelerator = Accelerator(
        mixed_precision=tc.mixed_precision,
        gradient_accumulation_steps=tc.gradient_accumulation_steps,
        cpu=not torch.cuda.is_available(),
    )
    if accelerator.is_main_process:
        images, manifest = prepare_run(cfg, run, resume, split)
    accelerator.wait_for_everyone()
    if not accelerator.is_main_process:
        images = load_dataset(cfg.data)
        manifest = SplitManifest.load(run.manifest)
    resolution = cfg.data.resolution or images.native_resolution
    defenses = build_defenses(cfg.defenses)
    ctx = DefenseContext(
        cfg,
        images,
        manifest,
        resolution,
        Path(cache_dir) if cache_dir else default_cache_dir(),
        train=train_target,
        step_seed=step_seed,
    )
    train_x, origins, set_info = build_training_set(images, manifest, cfg, resolution, train_on, step_seed)
    for defense in defenses:
        train_x, origins = defense.training_set(train_x, origins, ctx)
    planned = set_info.pop("canaries_planned", [])
    if planned:  # what the model really sees of its IN canaries (a deduplication may drop one)
        kept = {int(o) for o in origins}
        set_info["canaries_trained"] = [i for i in planned if i in kept]
        set_info["canaries_removed_by_defenses"] = [i for i in planned if i not in kept]

    for defense in defenses:
        defense.prepare_training(ctx, run.root, origins, accelerator.device)
    maker = next((d for d in defenses if d.assembles_target), None)
    if maker is not None:  # DualMD: the target is made of other models, nothing is trained here
        if accelerator.is_main_process:
            with atomic_dir(run.target) as tmp:
                made = maker.assemble_target(cfg, tmp, ctx)
            fields = {**made, "training_rows": set_info["rows"], "ema": cfg.train.use_ema}
            record_target(run, cfg, images, manifest, resolution, set_info, [d.info() for d in defenses], ctx, fields)
        accelerator.wait_for_everyone()
        return run

    set_seed(cfg.seed)
    kind = TARGETS.get(cfg.model.kind)()
    built = kind.build(cfg, images.all_caption_texts(), resolution, images.channels)
    model = built.model
    for defense in defenses:
        model = defense.build_model(model, ctx)
    built.model = model
    for defense in defenses:
        if defense.text_only and not built.conditional:
            raise ConfigError(f"defense {defense.name} acts on captions; model.kind {cfg.model.kind} has none")
        if defense.token_level and built.tokenizer_2 is not None:
            raise ConfigError(
                f"defense {defense.name}: this mode rewrites single token ids, and model.kind {cfg.model.kind} "
                "encodes every caption with two tokenizers; use mode: replace"
            )
    if built.vae is not None:  # latent models train on VAE latents, encoded once
        train_x = encode_latents(built.vae, train_x)
    train_ids = caption_ids(built, [images.captions[int(o)] for o in origins])  # canonical captions
    variant_ids = None  # (rows, V, tokens): every paraphrase of each row's caption, one drawn per step
    if train_ids is not None and any(len(images.variants(int(o))) > 1 for o in origins):
        texts = [images.variants(int(o)) for o in origins]
        count = max(len(v) for v in texts)
        variant_ids = caption_ids(built, [v[j % len(v)] for v in texts for j in range(count)]).view(
            len(texts), count, -1
        )
    empty_ids = caption_ids(built, [""])
    text_shape = built.text_shape
    set_seed(cfg.seed)  # the same optimisation noise whatever the model stage did
    trainable = [p for p in model.parameters() if p.requires_grad]
    noise_scheduler = built.noise_scheduler or build_scheduler(cfg.scheduler, cfg.model.prediction_type)
    prediction_type = check_prediction_type(str(noise_scheduler.config.get("prediction_type") or "epsilon"))
    if built.noise_scheduler is not None and "prediction_type" in cfg.model.model_fields_set:
        if cfg.model.prediction_type != prediction_type:
            raise ConfigError(
                f"model.prediction_type: {cfg.model.prediction_type!r}, but the pretrained folder's scheduler "
                f"predicts {prediction_type!r}; leave the field out to train as the folder does"
            )
    optimizer = torch.optim.AdamW(trainable, lr=tc.learning_rate, weight_decay=tc.weight_decay)
    lr_scheduler = get_scheduler(
        tc.lr_schedule, optimizer, num_warmup_steps=tc.warmup_steps, num_training_steps=tc.steps
    )
    ema = EMAModel(trainable, decay=tc.ema_decay) if tc.use_ema else None
    raw_model = model
    privacy = next((d for d in defenses if d.stage == "privacy"), None)
    engine = None
    if privacy is not None:
        engine = privacy.engine(model, optimizer, len(train_x), tc.batch_size, tc.steps, cfg.seed, accelerator)
        model, optimizer = engine.model, engine.optimizer
    step_defenses = [d for d in defenses if d.stage == "step"]
    if engine is not None and accelerator.num_processes > 1:
        # distributed DP-SGD: opacus' DistributedDPOptimizer sums the clipped per-example gradients across processes
        # itself (noise from the main process only); DDP's own gradient sync would be redundant, so the model is not
        # wrapped and is checkpointed as a plain object
        optimizer = accelerator.prepare(optimizer)
        loop_state = LoopState(lr_scheduler, ema, plain_model=model)
    else:
        model, optimizer = accelerator.prepare(model, optimizer)
        loop_state = LoopState(lr_scheduler, ema)
    if ema is not None:
        ema.to(accelerator.device)

    log = JsonLinesLog(run.train_log)
    start = 0
    if resume and (ckpt := latest_checkpoint(run)) is not None:
        loop_state.check(ckpt)  # before accelerate sees the folder
        accelerator.load_state(str(ckpt))  # model (safetensors), optimizer and RNG states (weights_only loads)
        loop_state.load(ckpt)
        start = int(read_json(ckpt / "step.json")["step"])
        if accelerator.is_main_process:
            log.truncate_after("step", start)
    if engine is not None:
        engine.restore(start)

    world, rank = accelerator.num_processes, accelerator.process_index
    accum = tc.gradient_accumulation_steps
    sampler = EpochSampler(len(train_x), tc.batch_size * world, cfg.seed)
    bar = tqdm(
        range(start, tc.steps),
        initial=start,
        total=tc.steps,
        desc="train",
        disable=not (progress and accelerator.is_local_main_process),
    )
    t0 = time.time()
    model.train()
    for step in bar:
        losses = []
        for micro in range(accum):
            micro_index = step * accum + micro
            gen = torch.Generator().manual_seed(step_seed(cfg.seed, micro_index, rank, 1))
            if engine is not None:  # Poisson batch; each example expanded into K rows
                idx = engine.batch(step, step_seed)
                engine.seed_noise(step, step_seed)
                rows = np.repeat(idx, engine.rows_per_example)
            else:
                idx = rows = sampler.batch(micro_index)[rank * tc.batch_size : (rank + 1) * tc.batch_size]
            if len(rows) == 0:  # an empty Poisson batch still takes a (pure-noise) private step
                engine.empty_step()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                losses.append(torch.tensor(float("nan")))
                continue
            x0 = train_x[rows]
            noise = torch.randn(x0.shape, generator=gen)
            t = torch.randint(0, noise_scheduler.config.num_train_timesteps, (len(x0),), generator=gen)
            x_in, noise_in = x0, noise
            for defense in step_defenses:
                x_in, noise_in = defense.perturb(x_in, noise_in, gen)
            ids, text_noise = None, None
            if train_ids is not None:
                if variant_ids is not None:
                    pick = torch.randint(0, variant_ids.shape[1], (len(rows),), generator=gen)
                    ids = variant_ids[torch.as_tensor(rows), pick].clone()
                else:
                    ids = train_ids[rows].clone()
                drop = torch.rand(len(rows), generator=gen) < tc.caption_dropout
                ids[drop] = empty_ids
                for defense in step_defenses:
                    ids = defense.perturb_captions(ids, train_ids, gen)
                    text_noise = defense.text_noise((len(rows), *text_shape), gen, text_noise)
                ids = to_device(ids, accelerator.device)
                text_noise = None if text_noise is None else to_device(text_noise, accelerator.device)
            device = accelerator.device
            # noise_in is noise itself unless a defense perturbed it: one copy to the device then
            noise, noise_in = to_device(noise, device), (None if noise_in is noise else to_device(noise_in, device))
            x0, t = to_device(x_in, device), to_device(t, device)
            x_t = noise_scheduler.add_noise(x0, noise if noise_in is None else noise_in, t)
            target = loss_target(prediction_type, noise_scheduler, x0, noise, t)
            for defense in defenses:  # DistillMD: the teacher that did not see the row
                target = defense.loss_target(x_t, t, rows, target)
            with accelerator.accumulate(model):
                pred = model(x_t, t, ids, text_noise)
                loss = F.mse_loss(pred.float(), target.float())
                accelerator.backward(loss)
                if engine is not None:
                    engine.average_rows(len(idx))
                elif accelerator.sync_gradients and tc.grad_clip:
                    accelerator.clip_grad_norm_(trainable, tc.grad_clip)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            losses.append(loss.detach())
        if engine is not None:
            engine.record_step()
        lr_scheduler.step()
        if ema is not None:
            ema.step(trainable)
        loss_value = accelerator.gather(torch.stack(losses).nanmean()[None]).mean().item()
        bar.set_postfix(loss=f"{loss_value:.4f}")
        done = step + 1
        if accelerator.is_main_process and (done % tc.log_every == 0 or done == tc.steps):
            log.write(
                {"step": done, "loss": loss_value, "lr": lr_scheduler.get_last_lr()[0], "seconds": time.time() - t0}
            )
        if done % tc.checkpoint_every == 0 and done < tc.steps:
            save_checkpoint(accelerator, run, done, tc.checkpoints_kept, loop_state)
        if stop_after is not None and done >= stop_after:
            bar.close()
            return run
    bar.close()

    accelerator.wait_for_everyone()
    if engine is not None:
        engine.detach()
    if accelerator.is_main_process:
        final = copy.deepcopy(raw_model).cpu()
        if ema is not None:
            ema.copy_to([p for p in final.parameters() if p.requires_grad])
        for defense in defenses:  # LoRA: the adapter saved on its own, merged into the target
            final = defense.finish_model(final, run.root)
        final.eval()
        with atomic_dir(run.target) as tmp:
            kind.save(built, final, cfg, tmp)
        defense_info = [d.info() for d in defenses]
        if engine is not None:
            defense_info = [dict(i, **engine.info()) if i["name"] == privacy.name else i for i in defense_info]
        fields = {
            "steps": tc.steps,
            "trained_on": train_on,
            "training_rows": int(len(train_x)),
            "dp_epsilon": engine.epsilon() if engine is not None else None,
            "train_seconds_this_session": round(time.time() - t0, 2),
            "parameters": sum(p.numel() for p in final.parameters()),
            "ema": tc.use_ema,
        }
        record_target(run, cfg, images, manifest, resolution, set_info, defense_info, ctx, fields)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return run


def record_target(run: RunDir, cfg, images, manifest, resolution, set_info, defense_info, ctx, fields) -> None:
    """What a finished target leaves beside its folder: the member / non-member loss gap (summary.json), and the
    training record (training set, defenses, what each did) in its manifest."""
    gap = generalisation_gap(load_target(run.target), images, manifest, resolution, cfg.train.gap_timesteps, cfg.seed)
    manifest.extra.update({"training_set": set_info, "defenses": defense_info, **ctx.report})
    manifest.save(run.manifest)
    summary = {"name": cfg.name, "steps": fields["steps"], "trained_on": fields["trained_on"]}
    summary.update(training_rows=fields["training_rows"], defenses=defense_info, dp_epsilon=fields["dp_epsilon"])
    summary.update({k: fields[k] for k in ("train_seconds_this_session", "parameters", "ema")}, gap=gap)
    write_json(run.summary, summary)


class LoopState:
    """What a checkpoint holds beside accelerate's own state, written without pickle: the LR scheduler as JSON, the
    EMA's shadow weights (and the model itself when accelerate does not hold it: distributed DP-SGD) as safetensors.
    Nothing is registered with accelerate's register_for_checkpointing, whose load_state unpickles
    custom_checkpoint_N.pkl with weights_only=False: a checkpoint planted in a results folder or a shared cache could
    then run code. A checkpoint holding files of that name is refused (check) before accelerate opens it."""

    def __init__(self, lr_scheduler, ema=None, plain_model: torch.nn.Module | None = None):
        self.lr_scheduler, self.ema, self.plain_model = lr_scheduler, ema, plain_model

    def save(self, folder: Path) -> None:
        from safetensors.torch import save_file

        write_json(folder / "lr_scheduler.json", self.lr_scheduler.state_dict())
        if self.ema is not None:
            state = dict(self.ema.state_dict())
            shadow = state.pop("shadow_params")
            save_file(
                {f"shadow.{i}": t.detach().contiguous().cpu() for i, t in enumerate(shadow)},
                str(folder / "ema.safetensors"),
            )
            write_json(folder / "ema.json", state)
        if self.plain_model is not None:
            save_file(
                {k: v.detach().contiguous().cpu() for k, v in self.plain_model.state_dict().items()},
                str(folder / "model_plain.safetensors"),
            )

    def check(self, folder: Path) -> None:
        """Refuse a checkpoint holding pickled custom state (an older diffmia's, or planted) before anything reads it."""
        pickled = sorted(p.name for p in folder.glob("custom_checkpoint_*.pkl"))
        if pickled:
            raise TrainingError(
                f"{folder}: holds pickled state ({', '.join(pickled)}) that diffmia never reads (an "
                f"older diffmia's checkpoint, or a planted file): remove {folder} to resume from an "
                f"earlier checkpoint, or the run folder to train from the start"
            )

    def load(self, folder: Path) -> None:
        from safetensors.torch import load_file

        needed = (
            ["lr_scheduler.json"]
            + (["ema.json", "ema.safetensors"] if self.ema is not None else [])
            + (["model_plain.safetensors"] if self.plain_model is not None else [])
        )
        missing = [n for n in needed if not (folder / n).is_file()]
        if missing:
            raise TrainingError(
                f"{folder}: checkpoint lacks {', '.join(missing)} (written by an older diffmia, which "
                f"pickled this state; it is not read): remove {folder.parent} to train from the start"
            )
        try:
            self.lr_scheduler.load_state_dict(read_json(folder / "lr_scheduler.json"))
            if self.ema is not None:
                state = read_json(folder / "ema.json")
                tensors = load_file(str(folder / "ema.safetensors"))
                state["shadow_params"] = [tensors[f"shadow.{i}"] for i in range(len(tensors))]
                self.ema.load_state_dict(state)
            if self.plain_model is not None:
                self.plain_model.load_state_dict(load_file(str(folder / "model_plain.safetensors")))
        except (ValueError, KeyError, TypeError, RuntimeError, OSError) as exc:
            raise TrainingError(
                f"{folder}: checkpoint state unreadable ({exc.__class__.__name__}: {str(exc)[:200]})"
            ) from None


def save_checkpoint(accelerator: Accelerator, run: RunDir, step: int, kept: int, loop_state: LoopState) -> None:
    """accelerate save_state into a temporary folder, then renamed: a kill never leaves a half checkpoint."""
    final = run.checkpoints / f"step-{step:08d}"
    tmp = run.checkpoints / f".step-{step:08d}.tmp"
    if accelerator.is_main_process and tmp.exists():
        shutil.rmtree(tmp)
    accelerator.wait_for_everyone()
    try:
        accelerator.save_state(str(tmp), safe_serialization=True)
        if accelerator.is_main_process:
            loop_state.save(tmp)
            write_json(tmp / "step.json", {"step": step})
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
            for old in sorted(run.checkpoints.glob("step-*"))[:-kept]:
                shutil.rmtree(old)
    except (OSError, SafetensorError) as exc:  # a full disk, a read-only folder: say so, keep the last complete one
        shutil.rmtree(tmp, ignore_errors=True)
        last = latest_checkpoint(run)
        raise TrainingError(
            f"{final}: could not write the checkpoint ({getattr(exc, 'strerror', None) or exc}); "
            + (f"the last complete one is {last}" if last else "no complete checkpoint yet")
        ) from None
    accelerator.wait_for_everyone()


@torch.no_grad()
def loss_target(prediction_type: str, noise_scheduler, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor):
    """What the denoiser is trained to output: the noise (epsilon), the velocity sqrt(abar) eps - sqrt(1 - abar) x0
    (v_prediction, diffusers' get_velocity) or the clean sample (sample)."""
    if prediction_type == "v_prediction":
        return noise_scheduler.get_velocity(x0, noise, t)
    if prediction_type == "sample":
        return x0
    return noise


def denoising_loss(target, x0: torch.Tensor, captions, timestep: int, seed: int, batch: int = 256) -> torch.Tensor:
    """Per-image ||eps - eps_theta(x_t, t[, caption])||^2 (mean over elements) at a fixed timestep, seeded noise."""
    z0 = torch.cat([target.encode(x0[i : i + batch]) for i in range(0, len(x0), batch)])
    gen = torch.Generator().manual_seed(step_seed(seed, timestep, 2))
    noise = torch.randn(z0.shape, generator=gen)
    out = []
    for i in range(0, len(z0), batch):
        zb, nb = z0[i : i + batch], to_device(noise[i : i + batch], z0.device)
        cond = list(captions[i : i + batch]) if target.conditional else None
        pred = target.predict_noise(add_noise(target, zb, nb, timestep), timestep, cond)
        out.append(((pred - nb) ** 2).flatten(1).mean(1).cpu())
    return torch.cat(out)


def generalisation_gap(target, images, manifest, resolution, timesteps, seed) -> dict[str, Any]:
    """Mean denoising loss on members and on test non-members at fixed timesteps and noise (captioned if the target
    is text-conditioned)."""
    mem_idx, non_idx = manifest.indices("members"), manifest.indices("nonmembers", "test")
    members, nonmembers = images.tensor(mem_idx, resolution), images.tensor(non_idx, resolution)
    mem_caps, non_caps = [images.captions[i] for i in mem_idx], [images.captions[i] for i in non_idx]
    rows = {}
    for t in timesteps:
        m = denoising_loss(target, members, mem_caps, t, seed).mean().item()
        n = denoising_loss(target, nonmembers, non_caps, t, seed).mean().item()
        rows[str(t)] = {"members": round(m, 6), "nonmembers_test": round(n, 6), "ratio": round(n / max(m, 1e-12), 4)}
    return rows
