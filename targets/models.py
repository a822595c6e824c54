"""Model and noise-schedule builders: a diffusers UNet2DModel sized from the config, a DDPMScheduler."""

from __future__ import annotations

from diffusers import DDPMScheduler, UNet2DModel

from diffmia.core.config import ModelConfig, SchedulerConfig


def build_unet(cfg: ModelConfig, resolution: int, channels: int) -> UNet2DModel:
    levels = len(cfg.block_out_channels)
    if resolution % (2 ** (levels - 1)):
        raise ValueError(
            f"model: {levels} levels halve the image {levels - 1} times; resolution {resolution} does not divide"
        )
    down = tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in cfg.attention)
    up = tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(cfg.attention))
    return UNet2DModel(
        sample_size=resolution,
        in_channels=channels,
        out_channels=channels,
        layers_per_block=cfg.layers_per_block,
        block_out_channels=tuple(cfg.block_out_channels),
        down_block_types=down,
        up_block_types=up,
        norm_num_groups=cfg.norm_num_groups,
        dropout=cfg.dropout,
        attention_head_dim=None,
    )


def build_scheduler(cfg: SchedulerConfig, prediction_type: str = "epsilon") -> DDPMScheduler:
    return DDPMScheduler(
        num_train_timesteps=cfg.num_train_timesteps,
        beta_start=cfg.beta_start,
        beta_end=cfg.beta_end,
        beta_schedule=cfg.beta_schedule,
        clip_sample=True,
        prediction_type=prediction_type,
    )
