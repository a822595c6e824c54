"""LoRA fine-tuning through peft: a base trained on public data (public_base.py; for Stable Diffusion the pretrained
pipeline itself), frozen, plus low-rank adapters on
the attention projections to_q / to_k / to_v / to_out.0 (diffusers' train_text_to_image_lora.py, rank 4) trained on
the members. The target is base + adapter merged (peft merge_and_unload); the adapter is also saved on its own in
RUN/adapter/. Fewer trainable parameters may reduce memorisation: the benchmark measures it against full fine-tuning
from the same base.
"""

from __future__ import annotations

from pathlib import Path

import torch
from pydantic import Field

from diffmia.core.config import ConfigError

from .base import Defense, register_defense
from .public_base import PublicBaseParams, load_base_weights


class LoRAParams(PublicBaseParams):
    rank: int = Field(4, ge=1, le=256)
    alpha: float = Field(4.0, gt=0.0, description="lora_alpha; the update is scaled by alpha / rank")
    target_modules: list[str] = Field(default_factory=lambda: ["to_q", "to_k", "to_v", "to_out.0"])
    dropout: float = Field(0.0, ge=0.0, lt=1.0)


@register_defense
class LoRA(Defense):
    name = "lora"
    paper = "Hu et al., LoRA (2021); peft; diffusers train_text_to_image_lora.py"
    Params = LoRAParams
    stage = "model"

    def build_model(self, model, ctx):
        from peft import LoraConfig, get_peft_model

        load_base_weights(model, ctx, self.params)
        p = self.params
        names = [n for n, _ in model.unet.named_modules()]
        if not any(n.endswith(tuple(p.target_modules)) for n in names):
            raise ConfigError(
                f"defense lora: no module of the model matches target_modules {p.target_modules} "
                "(does the model have attention? set model.attention)"
            )
        torch.manual_seed(ctx.config.seed)  # adapter init from the seed, whether the base was trained or cached
        config = LoraConfig(
            r=p.rank,
            lora_alpha=p.alpha,
            target_modules=list(p.target_modules),
            lora_dropout=p.dropout,
            init_lora_weights=True,
        )
        model.requires_grad_(False)  # base frozen (text encoder included); only the adapters train
        model.unet = get_peft_model(model.unet, config)
        ctx.report["lora"] = {
            "trainable_parameters": sum(q.numel() for q in model.parameters() if q.requires_grad),
            "total_parameters": sum(q.numel() for q in model.parameters()),
        }
        return model

    def finish_model(self, model, run_root: Path):
        """Save the adapter alone (RUN/adapter), and give the target base + adapter merged into a plain UNet."""
        from diffmia.core.io import atomic_dir

        with atomic_dir(run_root / "adapter") as tmp:
            model.unet.save_pretrained(tmp, safe_serialization=True)
            model.unet = model.unet.merge_and_unload()
        return model
