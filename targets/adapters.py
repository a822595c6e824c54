"""LoRA adapters merged into a loaded target before it is audited: what a team deployed is base + adapter.

Two formats:
- a peft adapter folder (`adapter_config.json` + weights, as peft's `save_pretrained` writes it), for the denoiser;
- a diffusers LoRA file (`pytorch_lora_weights.safetensors`, what the diffusers LoRA and DreamBooth-LoRA training
  scripts and most published LoRAs save: UNet layers under `unet.`, optionally text-encoder layers under
  `text_encoder.`), read with diffusers' own `lora_state_dict` and loaded with `load_lora_into_unet` /
  `load_lora_into_text_encoder`, then merged. Only safetensors: a pickled `.bin` could run code when loaded.
"""

from __future__ import annotations

from pathlib import Path

from .denoiser import ModelError

LORA_FILE = "pytorch_lora_weights.safetensors"
_SUFFIXES = (".lora_A.weight", ".lora_B.weight", ".lora.down.weight", ".lora.up.weight", ".alpha")


def adapter_format(adapter: Path) -> tuple[str, Path]:
    """('peft', folder) or ('diffusers-lora', file) for an --adapter path; a clear error for anything else."""
    adapter = Path(adapter)
    if adapter.is_dir() and (adapter / "adapter_config.json").is_file():
        return "peft", adapter
    if adapter.is_dir() and (adapter / LORA_FILE).is_file():
        return "diffusers-lora", adapter / LORA_FILE
    if adapter.is_file() and adapter.suffix == ".safetensors":
        return "diffusers-lora", adapter
    if adapter.is_file() and adapter.suffix in (".bin", ".pt", ".pth", ".ckpt"):
        raise ModelError(
            f"--adapter {adapter}: a pickled file, which could run code when loaded; convert it to safetensors"
        )
    raise ModelError(
        f"--adapter {adapter}: neither a peft adapter folder (adapter_config.json) nor a diffusers LoRA file "
        f"({LORA_FILE}, or any .safetensors file the diffusers LoRA scripts write)"
    )


def apply_adapter(target, adapter: str | Path) -> str:
    """Merge the adapter at `adapter` into `target`'s denoiser (and text encoder, where the file has layers for it).

    Returns:
        The format found: 'peft' or 'diffusers-lora (unet)' / 'diffusers-lora (unet + text encoder)'.

    Raises:
        ModelError: An unknown or pickled format, or layers that do not fit the model, naming the file.
    """
    kind, path = adapter_format(Path(adapter))
    if kind == "peft":
        _merge_peft_folder(target, path)
        return "peft"
    return _merge_diffusers_file(target, path)


def _merge_peft_folder(target, folder: Path) -> None:
    from peft import PeftModel

    try:
        target.unet = PeftModel.from_pretrained(target.unet, str(folder)).merge_and_unload().eval()
    except (ValueError, KeyError, RuntimeError, OSError) as exc:
        raise ModelError(
            f"--adapter {folder}: does not fit the model's UNet ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:200]})"
        ) from None


def _layers(keys, prefix: str) -> set[str]:
    """The module paths a LoRA state dict has layers for, under `prefix`."""
    out = set()
    for k in keys:
        if k.startswith(prefix + "."):
            name = k[len(prefix) + 1 :]
            for suffix in _SUFFIXES:
                if name.endswith(suffix):
                    name = name[: -len(suffix)]
                    break
            out.add(name)
    return out


def _merge_diffusers_file(target, path: Path) -> str:
    from diffusers import StableDiffusionPipeline
    from peft.tuners.tuners_utils import BaseTunerLayer

    try:
        state, alphas = StableDiffusionPipeline.lora_state_dict(str(path))
    except (ValueError, KeyError, RuntimeError, OSError) as exc:
        raise ModelError(f"--adapter {path}: not a readable LoRA file ({type(exc).__name__}: {str(exc)[:200]})")
    unet_layers, text_layers = _layers(state, "unet"), _layers(state, "text_encoder")
    if not unet_layers and not text_layers:
        example = next(iter(state), "none")
        raise ModelError(f"--adapter {path}: no UNet or text-encoder LoRA layers in it (first key: {example})")
    parts = []
    for layers, attr, name in ((unet_layers, "unet", "UNet"), (text_layers, "text_encoder", "text encoder")):
        if not layers:
            continue
        module = getattr(target, attr, None)
        if module is None or (attr == "unet" and not hasattr(module, "load_lora_adapter")):
            raise ModelError(
                f"--adapter {path}: has {name} LoRA layers, but this model's "
                + (
                    f"denoiser ({type(module).__name__}) takes no diffusers LoRA"
                    if module is not None
                    else f"has no {name}"
                )
            )
        try:
            if attr == "unet":
                StableDiffusionPipeline.load_lora_into_unet(state, alphas, unet=module)
            else:
                StableDiffusionPipeline.load_lora_into_text_encoder(
                    state, alphas, text_encoder=module, prefix="text_encoder"
                )
        except (ValueError, KeyError, RuntimeError) as exc:
            raise ModelError(
                f"--adapter {path}: its {name} layers do not fit the model ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0][:200]})"
            ) from None
        tuned = [m for m in module.modules() if isinstance(m, BaseTunerLayer)]
        if len(tuned) != len(layers):
            raise ModelError(
                f"--adapter {path}: {len(layers)} {name} LoRA layers in the file, {len(tuned)} of them fit the "
                f"model (keys such as {sorted(layers)[0]!r}): another architecture"
            )
        for m in tuned:
            m.merge()  # the base weights now include the adapter; the forward skips the LoRA branch
        module.eval()
        parts.append(name)
    return f"diffusers-lora ({' + '.join(parts)})"
