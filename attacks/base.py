"""The attack contract: parameters as a validated model, `score(target, batch) -> Tensor[B]`, queries per sample.

Scores are "higher = more likely member". Every random draw an attack makes comes from `per_sample_noise`, seeded by
(attack seed, sample id, draw), so the same seed gives the same scores whatever the batch size or order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Sequence

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict

from diffmia.attacks import ATTACKS
from diffmia.core.config import validate
from diffmia.core.devices import to_device
from diffmia.targets.target import Target, add_noise, ddim_move  # noqa: F401 - re-exported for attacks


class AttackParams(BaseModel):
    """Base for each attack's parameters: unknown names and out-of-range values are refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass
class AttackBatch:
    images: torch.Tensor  # (B, C, H, W) in [-1, 1]; the runner moves each scored batch to the target's device
    ids: Sequence[int]  # dataset indices: seed the per-sample noise
    captions: Sequence[str] | None = None

    @property
    def device(self) -> torch.device:
        """Where the attack's arithmetic on this batch runs: the device its images are on."""
        return self.images.device

    def to(self, device) -> "AttackBatch":
        return AttackBatch(to_device(self.images, device), self.ids, self.captions)

    def chunks(self, size: int):
        """Consecutive sub-batches of at most `size` images."""
        for start in range(0, len(self.ids), size):
            sl = slice(start, start + size)
            yield AttackBatch(
                self.images[sl], list(self.ids[sl]), None if self.captions is None else list(self.captions[sl])
            )


def batch_of(loaded, ids: Sequence[int]) -> AttackBatch:
    """The images of dataset indices `ids` at the run's resolution, with their captions for text targets, on the
    CPU (a whole pool of large images would not fit a GPU: the runner moves each scored batch there)."""
    ids = list(ids)
    captions = [loaded.images.captions[i] for i in ids] if loaded.target.conditional else None
    return AttackBatch(loaded.images.tensor(ids, loaded.resolution), ids, captions)


class Attack:
    """A membership-inference attack: validated parameters and one score per image, higher = more likely a member.

    Subclasses set `name`, `access` ("white-box", "gray-box" or "black-box"), `paper` and `Params`, and implement
    `queries_per_sample` and `score`; the runner batches, shards, counts queries against the declaration and writes
    the score files.

    Args:
        params: The attack's parameters (a dict is validated against `Params`; unknown keys are refused).
        seed: Seeds every random draw, per image and draw (`noise`), so scores do not depend on batching.

    Raises:
        ConfigError: A parameter is unknown, out of range, or inconsistent with another (`check`).
    """

    name: ClassVar[str]
    access: ClassVar[str]  # "white-box" (weights), "gray-box" (needs eps_theta) or "black-box" (generations only)
    paper: ClassVar[str]
    Params: ClassVar[type[AttackParams]]
    needs_captions: ClassVar[bool] = False  # only for text-conditioned targets
    needs_references: ClassVar[bool] = False  # trains reference models (the same recipe on other data) in prepare()
    # What `diffmia audit` does without public images: refuse the attack with this reason (needs_public), or run it
    # with these parameters instead (without_public); neither: the attack needs no public images.
    needs_public: ClassVar[str | None] = None
    without_public: ClassVar[dict[str, Any] | None] = None
    # Attacks whose final score needs population statistics return named components from score() and turn them
    # into the score in combine(frame), fitting anything they fit on the calibration rows only.
    components: tuple[str, ...] = ()

    def __init__(self, params: AttackParams | dict[str, Any] | None = None, seed: int = 0):
        if not isinstance(params, AttackParams):
            params = validate(dict(params or {}), self.Params, source=f"attack {self.name}")
        self.params = params
        self.seed = seed
        self.check(params)

    def check(self, params: AttackParams) -> None:
        """Cross-field checks that need the parameters together (raise ConfigError)."""

    def queries_per_sample(self, target: Target) -> int:
        """Denoiser calls per audited image (checked against the target's counter on every run).

        Args:
            target: The target the attack will score.

        Returns:
            The number of model calls `score` makes per image.
        """
        raise NotImplementedError

    def timesteps_used(self) -> list[int]:
        """The diffusion timesteps the attack queries at, as far as its parameters fix them (checked against the
        target's schedule before any work). Default: its `timestep` / `timesteps` parameters."""
        used = []
        for name in ("timestep", "timesteps"):
            value = getattr(self.params, name, None)
            if isinstance(value, int) and name == "timestep":
                used.append(value)
            elif isinstance(value, list):
                used += [int(v) for v in value]
        return used

    def generations_per_sample(self, target: Target) -> int:
        """Images generated (generate() or vary()) per audited image; 0 for attacks that only query the denoiser."""
        return 0

    def score(self, target: Target, batch: AttackBatch) -> torch.Tensor | dict[str, torch.Tensor]:
        """Score a batch of images.

        Args:
            target: The audited model, through the `Target` interface only.
            batch: Images in [-1, 1], their dataset indices (which seed the noise) and captions for text targets,
                on the target's device (the runner moves each batch there: `batch.to(target.device)`).

        Returns:
            A float32 tensor (B,) of scores, higher = more likely a member, on any device (the runner copies it
            back); or, for attacks with `components`, a dict of named (B,) tensors that `combine` turns into scores.
            The attack's arithmetic stays on the device of the batch and of the target's predictions; what it keeps
            between batches (features for `combine`) it copies to the CPU.
        """
        raise NotImplementedError

    def prepare(self, loaded, cache_dir) -> None:
        """Called once before scoring with the loaded run (its public split is the attacker's auxiliary data)."""

    def combine(self, frame) -> "np.ndarray":
        """From the component columns of all audited images to one score each (component attacks only).

        Args:
            frame: A pandas DataFrame with one row per audited image: `sample_id`, `source`, `split` ("calibration",
                "test" or "canary"), `is_member` and the columns named in `components`. Anything fitted must be
                fitted on the calibration rows only.

        Returns:
            One score per row, in the frame's order.
        """
        raise NotImplementedError

    def extra_info(self) -> dict[str, Any]:
        return {}

    def record_dropped(self, ids) -> None:
        """Images other processes dropped (sharded scoring): only attacks that drop images keep them."""
        if hasattr(self, "dropped"):
            self.dropped = sorted(set(self.dropped) | {int(i) for i in ids})

    def dropped_ids(self) -> list[int]:
        """Images the attack could not score (e.g. no usable rewrite): left out of the score file, listed in its JSON."""
        return []

    # -- helpers shared by attacks -----------------------------------------------------------------------------
    def noise(self, batch: AttackBatch, shape: Sequence[int], draw: int = 0) -> torch.Tensor:
        """The batch's seeded noise (per_sample_noise, drawn on the CPU so every device gets the same draws), on
        the batch's device."""
        return to_device(per_sample_noise(batch.ids, shape, self.seed, draw), batch.device)


def per_sample_noise(ids: Sequence[int], shape: Sequence[int], seed: int, draw: int = 0) -> torch.Tensor:
    """Standard normal noise (len(ids), *shape), each row seeded by (seed, id, draw) alone."""
    rows = []
    for i in ids:
        state = np.random.SeedSequence([int(seed), int(i), int(draw)]).generate_state(1, dtype=np.uint64)[0]
        rows.append(torch.randn(tuple(shape), generator=torch.Generator().manual_seed(int(state >> 1))))
    return torch.stack(rows)


def register_attack(cls: type[Attack]) -> type[Attack]:
    """Class decorator: register an attack under its `name` (built-in modules and plugins alike).

    Raises:
        ValueError: Another attack has this name.
    """
    return ATTACKS.register(cls.name)(cls)


def build_attack(name: str, params: dict[str, Any] | None = None, seed: int = 0) -> Attack:
    """The attack registered as `name` (built-in or plugin), with validated parameters.

    Args:
        name: The attack's name.
        params: Its parameters (unknown keys and out-of-range values are refused).
        seed: Seeds its noise draws.

    Returns:
        The attack, ready to `prepare` and `score`.

    Raises:
        UnknownNameError: No attack has this name (the message suggests the closest).
        ConfigError: A bad parameter.
    """
    return ATTACKS.get(name)(params, seed=seed)
