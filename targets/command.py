"""Recipes trained by the team's own command (`command:` in a recipe, `diffmia audit --train-command`).

The strongest attacks need reference models trained by the target's recipe; a team's recipe is its own script (the
diffusers example scripts, or in-house code with its augmentations, loss weighting, schedule, EMA). A command recipe
trains each model by running that script:

1. the training set (the run's members, or a reference's subset) is written as the diffusers scripts read it: an
   image folder with `metadata.jsonl` (`file_name`, `text`), owner-only (it holds member images);
2. the command runs through the shell with {data}, {out}, {seed} and {resolution} substituted (shell-quoted), in the
   current folder, its output and exit code kept in the run folder (`command.log`, `command.json`);
3. what it saved in {out} becomes the run's target: a diffusers pipeline folder as it is, or a LoRA (a
   `pytorch_lora_weights.safetensors` or a peft folder) on `command.base`, recorded in `target/diffmia-adapter.json`
   and merged into the base whenever the target is loaded.

A failed command is a CommandFailed error naming its log (the last lines quoted); nothing of a failed run counts as trained,
so a rerun runs it again, and the runs already made are reused (references are cached by the command, the values of
the environment variables it names, the training set and the seed: targets/references.py).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shlex
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np

from diffmia.core.config import TargetConfig
from diffmia.core.errors import DiffmiaError
from diffmia.core.io import private_dir, write_json

from .kinds import ADAPTER_MARK

logger = logging.getLogger(__name__)


class CommandFailed(DiffmiaError, RuntimeError):
    """A training command that exited with an error, timed out, or saved no model."""


ENV_NAME = re.compile(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?")


def env_names(cfg: TargetConfig) -> list[str]:
    """The environment variables that key a command's cache: those listed and those the command line names."""
    command = cfg.command
    return sorted(set(command.env) | set(ENV_NAME.findall(command.run)))


def command_key(cfg: TargetConfig) -> str:
    """A digest of what a command trains besides its data and seed: the command line and its variables' values."""
    names = env_names(cfg)
    payload = {"run": cfg.command.run, "base": cfg.command.base, "env": {n: os.environ.get(n) for n in names}}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]


def write_training_folder(images, indices, folder: Path) -> Path:
    """The images `indices` as PNG files with a metadata.jsonl (file_name, text): the diffusers scripts' image folder
    format. Owner-only: these are member images."""
    from PIL import Image

    if folder.exists():
        shutil.rmtree(folder)
    private_dir(folder)
    lines = []
    for k, i in enumerate(indices):
        px = images.pixels[int(i)].astype(np.float64) * 255.0 / images.max_value
        px = np.clip(np.round(px), 0, 255).astype(np.uint8)
        mode = "L" if px.shape[-1] == 1 else "RGB"
        name = f"{k:06d}.png"
        Image.fromarray(px[..., 0] if mode == "L" else px, mode).save(folder / name)
        lines.append(json.dumps({"file_name": name, "text": images.captions[int(i)]}))
    (folder / "metadata.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def command_line(cfg: TargetConfig, data: Path, out: Path, resolution: int) -> str:
    values = {"data": str(data), "out": str(out), "seed": str(cfg.seed), "resolution": str(resolution)}
    line = cfg.command.run
    for key, value in values.items():
        line = line.replace("{" + key + "}", shlex.quote(value))
    return line


def run_command(cfg: TargetConfig, root: Path, data: Path, out: Path, resolution: int, threads: int | None = None):
    """Run the recipe's command; its output goes to root/command.log, its exit code and time to root/command.json."""
    line = command_line(cfg, data, out, resolution)
    log = root / "command.log"
    env = dict(os.environ)
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    logger.info(f"training command: {line}")
    t0 = time.time()
    with open(log, "w", encoding="utf-8") as f:
        try:
            proc = subprocess.run(
                line, shell=True, stdout=f, stderr=subprocess.STDOUT, env=env, timeout=cfg.command.timeout_s
            )
            code = proc.returncode
        except subprocess.TimeoutExpired:
            code = None
    record = {
        "command": line,
        "exit_code": code,
        "seconds": round(time.time() - t0, 1),
        "env": {n: os.environ.get(n) for n in env_names(cfg)},
    }
    write_json(root / "command.json", record)
    if code != 0:
        tail = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-5:]
        why = f"timed out after {cfg.command.timeout_s} s" if code is None else f"exit code {code}"
        raise CommandFailed(
            f"the training command failed ({why}); its output is in {log}" + (": " + " | ".join(tail) if tail else "")
        )
    return record


def adopt_output(cfg: TargetConfig, out: Path, target: Path) -> str:
    """Move what the command saved in `out` to the run's target folder: 'pipeline' or 'lora' (on command.base)."""
    from .adapters import adapter_format

    if (out / "model_index.json").is_file():
        if target.exists():
            shutil.rmtree(target)
        os.replace(out, target)
        return "pipeline"
    lora = out / "pytorch_lora_weights.safetensors"
    if lora.is_file() or (out / "adapter_config.json").is_file():
        if not cfg.command.base:
            raise CommandFailed(
                f"{out}: the command saved a LoRA, not a pipeline; give the base model it was trained on "
                f"(command.base, or the audited MODEL with --adapter)"
            )
        adapter_format(out)  # refuses pickled or unknown files before anything is kept
        if target.exists():
            shutil.rmtree(target)
        os.replace(out, target)
        write_json(target / ADAPTER_MARK, {"base": str(Path(cfg.command.base).resolve()), "adapter": "."})
        return "lora"
    found = sorted(p.name for p in out.iterdir())[:10] if out.is_dir() else []
    raise CommandFailed(
        f"{out}: the command saved neither a diffusers pipeline (model_index.json) nor a LoRA "
        f"(pytorch_lora_weights.safetensors or adapter_config.json); found {found or 'nothing'}"
    )


def train_by_command(cfg: TargetConfig, run, images, manifest, train_on: str = "members") -> dict:
    """Train the run's target with the recipe's command; returns what summary.json records of it."""
    indices = [e.index for e in getattr(manifest, train_on)]
    indices += [c["index"] for c in manifest.canaries() if c["included"]] if train_on == "members" else []
    resolution = cfg.data.resolution or images.native_resolution
    data = write_training_folder(images, sorted(indices), run.root / "train-data")
    out = run.root / "command-out"
    if out.exists():
        shutil.rmtree(out)
    try:
        record = run_command(cfg, run.root, data, out, resolution, _threads())
        output = adopt_output(cfg, out, run.target)
    finally:
        shutil.rmtree(data, ignore_errors=True)  # member images: not kept beside the model
    return {"trained_by": "command", "command_seconds": record["seconds"], "output": output, "images": len(indices)}


def _threads() -> int | None:
    from diffmia.core import parallel

    return parallel.threads() if os.environ.get(parallel.JOBS_ENV) else None


def signature(target) -> dict:
    """What a reference must share with the audited model: the denoiser's architecture and the noise schedule."""
    unet = {k: _plain(v) for k, v in dict(target.unet.config).items() if not k.startswith("_")}
    keys = ("num_train_timesteps", "beta_schedule", "beta_start", "beta_end", "prediction_type", "trained_betas")
    scheduler = {k: _plain(dict(target.noise_scheduler.config).get(k)) for k in keys}
    return {"unet": unet, "scheduler": scheduler}


def _plain(value):
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def differences(expected: dict, found: dict) -> list[str]:
    out = []
    for part in ("unet", "scheduler"):
        for key in sorted(set(expected[part]) | set(found[part])):
            a, b = expected[part].get(key), found[part].get(key)
            if a != b:
                out.append(f"{part}.{key} {b!r} (the audited model has {a!r})")
    return out
