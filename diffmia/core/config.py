"""Typed, validated configuration: YAML files in configs/ plus `--set dotted.key=value` overrides.

Every recipe is a `TargetConfig`. Loading refuses unknown keys, wrong types and out-of-range values with a one-line
error that names the file and the field (and suggests the closest known key for a typo).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, TypeVar

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from diffmia.core.errors import DiffmiaError
from diffmia.core.registries import DATASETS, DEFENSES, TARGETS
from diffmia.core.registry import did_you_mean


class ConfigError(DiffmiaError, ValueError):
    """A config that cannot be used; the message is ready to show to the user."""


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, strict=True)


def _registered(registry):
    """A validator: the value must be a name of `registry` (listed without importing anything)."""

    def check(value: str) -> str:
        names = registry.names()
        if value not in names:
            raise ValueError(
                f"unknown {registry.kind} '{value}'{did_you_mean(value, names)}; known: {', '.join(names)}"
            )
        return value

    return check


class DuplicatesConfig(StrictModel):
    """Inject duplicated members into the training set, as web-scraped data has (to measure deduplication)."""

    fraction: float = Field(0.0, ge=0.0, le=1.0, description="fraction of members that get extra copies")
    copies: int = Field(0, ge=0, le=100, description="extra copies of each chosen member")
    augment_std: float = Field(0.0, ge=0.0, le=1.0, description="std of pixel noise on each copy (0: exact copies)")


class DataConfig(StrictModel):
    dataset: Annotated[str, AfterValidator(_registered(DATASETS))] = Field(
        "digits", description="a registered dataset (diffmia.core.registries.DATASETS, or a plugin's)"
    )
    path: Optional[str] = Field(
        None,
        description="folder for cifar10 / imagefolder; hf: a datasets save_to_disk folder (FOLDER:SPLIT for one of "
        "a DatasetDict's splits), a parquet file or a folder of them",
    )
    resolution: Optional[int] = Field(None, ge=4, le=1024, description="resize to this size (None: native)")
    caption_column: str = Field("text", description="imagefolder / hf: caption key in metadata.jsonl, or column")
    image_column: str = Field("image", description="hf: the image column of the table")
    members: int = Field(256, ge=2, description="training images (the members)")
    nonmembers: int = Field(256, ge=2, description="held-out images the attacks must tell apart")
    calibration_fraction: float = Field(0.5, gt=0.0, lt=1.0, description="share of each side used to fit thresholds")
    max_images: Optional[int] = Field(None, ge=4, description="use only the first N images of the dataset")
    partial: bool = Field(False, description="cifar10: accept a folder that lacks some of its batch files")
    canaries: int = Field(
        0,
        ge=0,
        description="one-run audit: images outside the audit split, each trained on by a "
        "seeded fair coin (Steinke et al. 2023)",
    )
    duplicates: DuplicatesConfig = DuplicatesConfig()

    @model_validator(mode="after")
    def _path_needed(self) -> "DataConfig":
        if self.dataset in ("cifar10", "imagefolder", "npz", "hf") and not self.path:
            raise ValueError(f"dataset '{self.dataset}' needs data.path")
        if self.dataset in ("imagefolder", "hf") and self.resolution is None:
            raise ValueError(f"dataset '{self.dataset}' needs data.resolution (images are cropped and resized to it)")
        return self


class ModelConfig(StrictModel):
    kind: Annotated[str, AfterValidator(_registered(TARGETS))] = Field(
        "unet2d",
        description="a registered target kind: unet2d (pixel DDPM), unet2d-condition (text-conditioned pixel model), "
        "stable-diffusion and stable-diffusion-xl (fine-tuned from a local folder), stable-diffusion-3 and flux "
        "(audited black-box, not trained here), or a plugin's",
    )
    pretrained: Optional[str] = Field(
        None,
        description="stable-diffusion / stable-diffusion-xl: the local diffusers StableDiffusionPipeline / "
        "StableDiffusionXLPipeline folder a fine-tune starts from",
    )
    prediction_type: Literal["epsilon", "v_prediction", "sample"] = Field(
        "epsilon",
        description="what the denoiser is trained to output: the noise, v = sqrt(abar) eps - sqrt(1 - abar) x0, or "
        "x0 (a pretrained folder's scheduler decides for stable-diffusion); attacks see every model as a noise "
        "predictor",
    )
    cross_attention_dim: int = Field(32, ge=4, le=4096, description="unet2d-condition: text feature size")
    text_layers: int = Field(2, ge=1, le=24, description="unet2d-condition: CLIP text encoder layers")
    text_heads: int = Field(4, ge=1, le=64)
    attention_head_dim: int = Field(8, ge=1, le=512)
    max_caption_tokens: int = Field(16, ge=4, le=77)
    block_out_channels: list[int] = Field(default_factory=lambda: [32, 64], min_length=1, max_length=6)
    attention: list[bool] = Field(default_factory=lambda: [False, True], description="attention per level")
    layers_per_block: int = Field(1, ge=1, le=4)
    norm_num_groups: int = Field(8, ge=1)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)

    @model_validator(mode="after")
    def _consistent(self) -> "ModelConfig":
        if len(self.attention) != len(self.block_out_channels):
            raise ValueError(
                f"attention has {len(self.attention)} entries but block_out_channels has {len(self.block_out_channels)}"
            )
        for ch in self.block_out_channels:
            if ch % self.norm_num_groups:
                raise ValueError(f"norm_num_groups={self.norm_num_groups} does not divide channel count {ch}")
        needs = {"stable-diffusion": "StableDiffusionPipeline", "stable-diffusion-xl": "StableDiffusionXLPipeline"}
        if self.kind in needs and not self.pretrained:
            raise ValueError(f"kind {self.kind!r} needs model.pretrained (a local {needs[self.kind]} folder)")
        if self.kind == "unet2d-condition" and self.cross_attention_dim % self.text_heads:
            raise ValueError(
                f"text_heads={self.text_heads} does not divide cross_attention_dim={self.cross_attention_dim}"
            )
        return self


class SchedulerConfig(StrictModel):
    num_train_timesteps: int = Field(1000, ge=10, le=10000)
    beta_start: float = Field(1e-4, gt=0.0, lt=1.0)
    beta_end: float = Field(0.02, gt=0.0, lt=1.0)
    beta_schedule: Literal["linear", "scaled_linear", "squaredcos_cap_v2"] = "linear"


class TrainConfig(StrictModel):
    steps: int = Field(3000, ge=1, description="optimizer steps")
    batch_size: int = Field(64, ge=1, description="per-process batch size")
    learning_rate: float = Field(2e-3, gt=0.0, le=1.0)
    weight_decay: float = Field(0.0, ge=0.0)
    lr_schedule: Literal["constant", "cosine", "linear"] = "constant"
    warmup_steps: int = Field(100, ge=0)
    grad_clip: Optional[float] = Field(1.0, gt=0.0, description="max gradient norm (None: off)")
    use_ema: bool = True
    ema_decay: float = Field(0.999, ge=0.0, lt=1.0)
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    gradient_accumulation_steps: int = Field(1, ge=1)
    checkpoint_every: int = Field(500, ge=1)
    checkpoints_kept: int = Field(2, ge=1)
    log_every: int = Field(50, ge=1)
    gap_timesteps: list[int] = Field(default_factory=lambda: [10, 50, 100, 200, 500])
    caption_dropout: float = Field(0.1, ge=0.0, le=1.0, description="text models: share of empty captions (for CFG)")
    train_text_encoder: bool = Field(True, description="unet2d-condition: train the text encoder with the UNet")


def instantiate_defenses(entries: list[dict[str, Any]]) -> list[Any]:
    """Each entry of a recipe's `defenses:` list as its defense, looked up in the registry (built-in or plugin) and
    validated by its own parameter model; at most one of each. Raises ConfigError naming the entry."""
    out = []
    for i, entry in enumerate(entries):
        entry = dict(entry)
        name = entry.pop("name", None)
        if not name:
            raise ConfigError(f"entry {i}: needs a 'name'")
        try:
            out.append(DEFENSES.get(name)(entry))
        except ConfigError as exc:
            raise ConfigError(f"entry {i}: {exc}") from None
        except KeyError as exc:
            raise ConfigError(f"entry {i}: {exc}") from None
    names = [d.name for d in out]
    if len(set(names)) != len(names):
        raise ConfigError(f"defenses: each defense may appear once; got {names}")
    return out


class CommandConfig(StrictModel):
    """A recipe trained by the team's own command instead of diffmia's loop (targets/command.py)."""

    run: str = Field(
        ...,
        min_length=1,
        description="the command line, run by a shell: {data} (an image folder with metadata.jsonl captions, as the "
        "diffusers training scripts read it), {out} (where it saves the pipeline or LoRA), {seed}, {resolution}",
    )
    env: list[str] = Field(
        default_factory=list,
        description="environment variables whose values change what it trains (cache key); $NAME in run counts too",
    )
    base: Optional[str] = Field(
        None, description="a LoRA recipe: the base pipeline folder the command's LoRA file (in {out}) is applied to"
    )
    timeout_s: Optional[int] = Field(None, ge=1, description="fail a training that runs longer (None: no limit)")

    @field_validator("run")
    @classmethod
    def _has_out(cls, value: str) -> str:
        if "{out}" not in value or "{data}" not in value:
            raise ValueError("the command must name {data} (its training images) and {out} (where it saves)")
        return value


class TargetConfig(StrictModel):
    """One training recipe: data and split, model, noise schedule, training, defenses."""

    name: str = "target"
    seed: int = Field(0, ge=0)
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    scheduler: SchedulerConfig = SchedulerConfig()
    train: TrainConfig = TrainConfig()
    defenses: list[dict[str, Any]] = Field(default_factory=list, description="[{name: dp_sgd, epsilon: 10}, ...]")
    command: Optional[CommandConfig] = Field(
        None, description="train with this command instead of diffmia's loop (model, train and defenses then unused)"
    )

    @field_validator("defenses")
    @classmethod
    def _defenses_known(cls, value: list[dict[str, Any]]) -> list[dict[str, Any]]:
        instantiate_defenses(value)  # raises ConfigError (a ValueError) naming the entry
        return value

    @model_validator(mode="after")
    def _timesteps_in_range(self) -> "TargetConfig":
        bad = [t for t in self.train.gap_timesteps if not 0 <= t < self.scheduler.num_train_timesteps]
        if bad:
            raise ValueError(f"train.gap_timesteps {bad} outside [0, {self.scheduler.num_train_timesteps})")
        return self


M = TypeVar("M", bound=BaseModel)


def parse_override(text: str) -> tuple[list[str], Any]:
    """'train.steps=20' -> (['train', 'steps'], 20); the value is read as YAML."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set '{text}': expected dotted.key=value")
    try:
        value = load_yaml(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set '{text}': value is not valid YAML ({exc.__class__.__name__})") from None
    return key.strip().split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for text in overrides:
        keys, value = parse_override(text)
        node = data
        for depth, key in enumerate(keys[:-1]):
            child = node.get(key)
            if child is None:
                child = node[key] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"--set '{text}': '{'.'.join(keys[: depth + 1])}' is not a section")
            node = child
        node[keys[-1]] = value
    return data


def _fields_at(model_cls: type[BaseModel], loc: tuple) -> list[str]:
    """Names of the fields of the sub-model found by walking `loc` from `model_cls`."""
    cls: Any = model_cls
    for part in loc:
        if isinstance(part, int):
            continue
        field = getattr(cls, "model_fields", {}).get(part)
        if field is None:
            return []
        cls = field.annotation
        for arg in getattr(cls, "__args__", ()) or ():  # Optional[Model], list[Model]
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                cls = arg
    return list(getattr(cls, "model_fields", {}))


def _short(text: str, limit: int = 120) -> str:
    """An input quoted in an error, cut to `limit` characters (a huge value never floods the terminal)."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def format_validation_error(source: str, exc: ValidationError, model_cls: type[BaseModel]) -> str:
    lines = []
    errors = exc.errors()
    if len(errors) > 20:
        lines.append(f"{source}: {len(errors)} errors; the first 20:")
        errors = errors[:20]
    for err in errors:
        loc = tuple(err["loc"])
        field = ".".join(str(p) for p in loc) or "(top level)"
        if err["type"] == "extra_forbidden":
            hint = did_you_mean(str(loc[-1]), _fields_at(model_cls, loc[:-1]))
            lines.append(f"{source}: {field}: unknown key{hint}")
        else:
            msg = err["msg"].removeprefix("Value error, ")
            got = (
                f" (got {_short(repr(err['input']))})"
                if err["type"] not in ("missing",) and not isinstance(err.get("input"), dict)
                else ""
            )
            lines.append(f"{source}: {field}: {msg}{got}")
    return "\n".join(lines)


def validate(data: dict[str, Any], model_cls: type[M], source: str = "<config>") -> M:
    try:
        return model_cls.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(source, exc, model_cls)) from None


class _NoAliasLoader(yaml.SafeLoader):
    """yaml.SafeLoader without anchors and aliases: a 300-byte alias bomb would otherwise expand into millions of
    nodes (and an error message as long). A config never needs them."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.events.AliasEvent):
            event = self.peek_event()
            raise yaml.YAMLError(
                f"aliases (*{str(event.anchor)[:40]}) are not allowed in a config, at line {event.start_mark.line + 1}"
            )
        return super().compose_node(parent, index)


CONFIG_MAX_BYTES = 1 << 20


def load_yaml(text: str):
    """YAML as a config reads it: safe types only, no aliases."""
    return yaml.load(text, Loader=_NoAliasLoader)


def read_yaml_mapping(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    if path.stat().st_size > CONFIG_MAX_BYTES:
        raise ConfigError(f"{path}: {path.stat().st_size} bytes; a config is at most {CONFIG_MAX_BYTES}")
    try:
        data = load_yaml(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        if "aliases" in str(exc):
            raise ConfigError(f"{path}: {str(exc)[:200]}") from None
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}: not valid YAML{where}") from None
    if data is None or data == {}:
        raise ConfigError(f"{path}: the config is empty; start from one in configs/ (e.g. configs/digits-ddpm.yaml)")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping of keys to values")
    return data


def load_config(path: str | os.PathLike, overrides: list[str] | None = None, model_cls: type[M] = TargetConfig) -> M:
    data = apply_overrides(read_yaml_mapping(path), list(overrides or []))
    return validate(data, model_cls, source=str(path))


def dump_config(cfg: BaseModel) -> dict[str, Any]:
    return cfg.model_dump(mode="json")


# Bumped when a text target built from the same config changes: 2 = the tokenizer keeps hyphenated words whole and
# digits captions train with their paraphrases. Only text-conditioned recipes' hashes include it, so pixel caches stay.
TEXT_TARGET_VERSION = 2


def recipe_hash(cfg: BaseModel) -> str:
    """A short hash of a config's non-default values: caches keyed by it survive new fields with defaults."""
    import hashlib
    import json

    data = cfg.model_dump(mode="json", exclude_defaults=True)
    if getattr(getattr(cfg, "model", None), "kind", None) == "unet2d-condition":
        data["_text_target_version"] = TEXT_TARGET_VERSION
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:12]
