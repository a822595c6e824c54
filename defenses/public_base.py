"""Fine-tuning from a base model trained on public data only (the setting LoRA is compared against).

The base is the recipe's own model trained on the split's public images (never members or non-members) for
`base_steps`, through the same training loop, and cached by a hash of its config under the cache folder, so every
recipe of a benchmark that asks for the same base reuses it. `public_base` then fine-tunes all weights on the
members; `lora` (lora.py) fine-tunes only low-rank adapters.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from diffmia.core.registries import TARGETS

from .base import Defense, DefenseContext, DefenseParams, register_defense


class PublicBaseParams(DefenseParams):
    base_steps: int = Field(2000, ge=1, description="training steps of the base model on the public split")
    base_learning_rate: float = Field(2e-3, gt=0.0, le=1.0)


def ensure_public_base(ctx: DefenseContext, steps: int, learning_rate: float, progress: bool = False) -> Path:
    """Train (once) the base model on the public split; return the folder of its saved target."""
    from diffmia.core.config import recipe_hash

    base_cfg = ctx.config.model_copy(deep=True)
    base_cfg.defenses = []
    base_cfg.data.duplicates = type(base_cfg.data.duplicates)()
    base_cfg.train.steps = steps
    base_cfg.train.learning_rate = learning_rate
    base_cfg.name = "public-base"  # the recipe's name does not change the base
    # the split's seed, not the recipe's: a reference model (the recipe retrained with another seed on another subset,
    # targets/references.py) fine-tunes the very base the target was fine-tuned from, as with a public checkpoint
    base_cfg.seed = ctx.manifest.seed
    key = recipe_hash(base_cfg)
    folder = ctx.cache_dir / f"public-base-{key}"
    from diffmia.core.claims import claim

    # several workers (executor jobs, --jobs reference processes) may need the same base: one trains, the others wait
    with claim(folder.with_name(folder.name + ".claim"), wait=True):
        run = ctx.train(base_cfg, folder, resume=True, progress=progress, train_on="public")
    ctx.report["public_base"] = {"folder": str(folder), "steps": steps, "public_images": len(ctx.manifest.public)}
    return run.target


def load_base_weights(model, ctx: DefenseContext, params) -> None:
    """Copy the public base's weights into the denoiser (UNet, and the text encoder of text models)."""
    from diffmia.targets.kinds import load_target

    if TARGETS.get(ctx.config.model.kind).pretrained:
        return  # the pretrained pipeline is the base
    folder = ensure_public_base(ctx, params.base_steps, params.base_learning_rate)
    base = load_target(folder)
    model.unet.load_state_dict(base.unet.state_dict())
    if hasattr(model, "text_encoder"):
        model.text_encoder.load_state_dict(base.text_encoder.state_dict())


@register_defense
class PublicBase(Defense):
    name = "public_base"
    paper = "full fine-tuning from a public-data base: the baseline for LoRA (diffusers train_text_to_image*.py)"
    Params = PublicBaseParams
    stage = "model"

    def build_model(self, model, ctx):
        load_base_weights(model, ctx, self.params)
        return model
