"""DP-SGD with opacus: Poisson sampling, per-example clipping, Gaussian noise, an honest epsilon.

Opacus' GradSampleModule computes per-row gradients, its DPOptimizer clips each example's gradient to
`max_grad_norm`, adds N(0, (noise_multiplier * max_grad_norm)^2) noise and averages over the expected batch size, and
its accountant (RDP by default) turns (noise multiplier, sample rate, steps) into epsilon at the configured delta.
Give either `epsilon` (the noise multiplier is solved for with opacus' get_noise_multiplier) or `noise_multiplier`.

Noise multiplicity (DPDM, Dockhorn et al., arXiv 2210.09929): each example is expanded into K rows with independent
(t, noise) draws; the K per-row gradients are averaged INSIDE the example before clipping, so one example still
contributes at most `max_grad_norm` and the accountant's epsilon stays true. (Stock opacus would clip each of the
B*K rows separately: K times the sensitivity.)

Per-example gradients use opacus' functorch path (`force_functorch=True`): its default hooks give wrong per-sample
gradients for convolutions downstream of diffusers' attention blocks (see the comment in PrivateTraining).

Batches are Poisson samples of the training set (each row kept with probability q = batch_size / n), drawn from a
generator seeded by (seed, step) like everything else in the loop, and the optimizer's noise likewise, so a resumed
DP run equals an uninterrupted one. Refused under several processes, gradient accumulation or fp16.
"""

from __future__ import annotations

from typing import Literal, Optional

import numpy as np
import torch
from pydantic import Field, model_validator

from diffmia.core.config import ConfigError

from .base import Defense, DefenseParams, register_defense

MAX_SIGMA = 1e6  # opacus.accountants.utils.MAX_SIGMA: get_noise_multiplier gives up beyond it


class DPSGDParams(DefenseParams):
    epsilon: Optional[float] = Field(None, gt=0.0, le=1000.0, description="target epsilon (solves for the noise)")
    noise_multiplier: Optional[float] = Field(None, ge=0.0, le=100.0, description="noise std / clipping norm")
    delta: float = Field(1e-5, gt=0.0, lt=1.0)
    max_grad_norm: float = Field(1.0, gt=0.0, description="per-example clipping bound C")
    noise_multiplicity: int = Field(1, ge=1, le=64, description="K noise draws averaged inside each example")
    accountant: Literal["rdp", "prv", "gdp"] = "rdp"

    @model_validator(mode="after")
    def _one_of(self) -> "DPSGDParams":
        if (self.epsilon is None) == (self.noise_multiplier is None):
            raise ValueError("give exactly one of epsilon or noise_multiplier")
        return self


@register_defense
class DPSGD(Defense):
    name = "dp_sgd"
    paper = "Abadi et al., Deep Learning with Differential Privacy (2016); DPDM noise multiplicity, arXiv 2210.09929"
    Params = DPSGDParams
    stage = "privacy"

    def engine(
        self, model, optimizer, n_train: int, batch_size: int, steps: int, seed: int, accelerator
    ) -> "PrivateTraining":
        if accelerator.gradient_accumulation_steps > 1:
            raise ConfigError(
                "defense dp_sgd: set train.gradient_accumulation_steps=1 (raise train.batch_size instead)"
            )
        if accelerator.mixed_precision == "fp16":
            raise ConfigError("defense dp_sgd: fp16 is not supported; use train.mixed_precision=no or bf16")
        return PrivateTraining(
            self.params,
            model,
            optimizer,
            n_train,
            batch_size,
            steps,
            seed,
            accelerator.num_processes,
            accelerator.process_index,
        )


def smallest_epsilon(p: "DPSGDParams", sample_rate: float, steps: int) -> float:
    """The epsilon at opacus' largest noise multiplier: nothing smaller is reachable with these steps and rate."""
    from opacus.accountants import create_accountant

    accountant = create_accountant(p.accountant)
    accountant.history = [(MAX_SIGMA, sample_rate, steps)]
    return float(accountant.get_epsilon(delta=p.delta))


class PrivateTraining:
    """Owns the opacus pieces for one training run; the loop asks it for batches and steps."""

    def __init__(
        self, p: DPSGDParams, model, optimizer, n_train, batch_size, steps, seed, world: int = 1, rank: int = 0
    ):
        from opacus import GradSampleModule
        from opacus.accountants import create_accountant
        from opacus.accountants.utils import get_noise_multiplier
        from opacus.optimizers import DPOptimizer
        from opacus.validators import ModuleValidator

        errors = ModuleValidator.validate(model, strict=False)
        if errors:
            raise ConfigError(f"defense dp_sgd: the model has layers opacus cannot handle: {errors[:3]}")
        self.params = p
        self.n_train = n_train
        self.sample_rate = min(1.0, batch_size / n_train)
        self.steps = steps
        self.seed = seed
        if p.noise_multiplier is not None:
            self.noise_multiplier = p.noise_multiplier
        else:
            try:
                self.noise_multiplier = float(
                    get_noise_multiplier(
                        target_epsilon=p.epsilon,
                        target_delta=p.delta,
                        sample_rate=self.sample_rate,
                        steps=steps,
                        accountant=p.accountant,
                    )
                )
            except ValueError as exc:  # opacus: "The privacy budget is too low."
                raise ConfigError(
                    f"defense dp_sgd: epsilon {p.epsilon:g} is out of reach at delta {p.delta:g} with {steps} steps at "
                    f"sample rate {self.sample_rate:.4g} (batch {batch_size} of {n_train}): the smallest epsilon opacus "
                    f"can reach there (noise multiplier {MAX_SIGMA:g}) is {smallest_epsilon(p, self.sample_rate, steps):.3g}"
                    f"; raise epsilon or delta, or train fewer steps ({exc})"
                ) from None
        # force_functorch: opacus' hook-based per-sample gradients come out zero or wrong for the conv layers that
        # follow diffusers' attention blocks (measured here against torch.func; tests/defenses/test_contract.py checks it);
        # the functorch path is exact for every layer, at about 1.4x the cost of the hooks.
        self.model = GradSampleModule(model, loss_reduction="mean", force_functorch=True)
        self.world, self.rank = world, rank
        if world > 1:
            # several processes (opacus' distributed DP-SGD): each Poisson-samples its own share of the rows at the
            # same rate q, the clipped sums are added across processes, the main process alone adds the noise, and
            # the sum is divided by the expected global batch: the same mechanism, so the accountant's epsilon
            # (sigma, q, steps) is exact
            from opacus.optimizers import DistributedDPOptimizer

            self.optimizer = DistributedDPOptimizer(
                optimizer,
                noise_multiplier=self.noise_multiplier,
                max_grad_norm=p.max_grad_norm,
                expected_batch_size=batch_size / world,
                loss_reduction="mean",
            )
        else:
            self.optimizer = DPOptimizer(
                optimizer,
                noise_multiplier=self.noise_multiplier,
                max_grad_norm=p.max_grad_norm,
                expected_batch_size=batch_size,
                loss_reduction="mean",
            )
        self.accountant = create_accountant(p.accountant)
        self.steps_done = 0

    @property
    def rows_per_example(self) -> int:
        return self.params.noise_multiplicity

    def batch(self, step: int, seed_fn) -> np.ndarray:
        """Poisson sample: each training row independently with probability q (with several processes, each samples
        the rows r with r % processes == its index: together every row once, at rate q)."""
        if self.world == 1:
            rng = np.random.default_rng(seed_fn(self.seed, step, 4))
            return np.nonzero(rng.random(self.n_train) < self.sample_rate)[0]
        mine = np.arange(self.rank, self.n_train, self.world)
        rng = np.random.default_rng(seed_fn(self.seed, step, 4, self.world, self.rank))
        return mine[rng.random(len(mine)) < self.sample_rate]

    def average_rows(self, examples: int) -> None:
        """Average each example's K per-row gradients before the optimizer clips per example."""
        k = self.params.noise_multiplicity
        for param in self.model.parameters():
            gs = getattr(param, "grad_sample", None)
            if gs is None:
                continue
            if k > 1:
                param.grad_sample = gs.view(examples, k, *gs.shape[1:]).mean(1)

    def empty_step(self) -> None:
        for param in self.model.parameters():
            if param.requires_grad:
                param.grad_sample = torch.zeros((0, *param.shape), dtype=param.dtype, device=param.device)

    def seed_noise(self, step: int, seed_fn) -> None:
        self.optimizer.generator = torch.Generator(device="cpu").manual_seed(seed_fn(self.seed, step, 5))

    def record_step(self) -> None:
        self.accountant.step(noise_multiplier=self.noise_multiplier, sample_rate=self.sample_rate)
        self.steps_done += 1

    def restore(self, steps_done: int) -> None:
        """After a resume: the accountant's history is (sigma, q) for every step already taken."""
        self.accountant.history = [(self.noise_multiplier, self.sample_rate, steps_done)] if steps_done else []
        self.steps_done = steps_done

    def detach(self) -> None:
        """Remove opacus' hooks from the model (before it is copied and saved)."""
        self.model.remove_hooks()

    def epsilon(self) -> float:
        return float(self.accountant.get_epsilon(delta=self.params.delta)) if self.steps_done else 0.0

    def info(self) -> dict:
        return {
            "epsilon": round(self.epsilon(), 4),
            "delta": self.params.delta,
            "accountant": self.params.accountant,
            "noise_multiplier": round(self.noise_multiplier, 5),
            "sample_rate": round(self.sample_rate, 6),
            "steps": self.steps_done,
            "max_grad_norm": self.params.max_grad_norm,
            "noise_multiplicity": self.params.noise_multiplicity,
            "training_rows": self.n_train,
            "processes": self.world,
        }
