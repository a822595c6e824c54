"""GSA: gradient-substitution attacks (Pang et al., "White-box Membership Inference Attacks against Diffusion Models",
arXiv 2308.06405; official code py85252876/GSA, `gen_l2_gradients_DDPM.py` and `test_attack_accuracy.py`),
white-box: the attacker reads gradients of the target's weights.

Features per image, as the official code computes them: at the K timesteps t_k = (k + 1) * (T // K) - 1 (99, 199,
..., 999 for T = 1000, K = 10) with one seeded noise draw each, the l2 norm (`torch.norm(p.grad)`) of the denoising
loss's gradient for every parameter tensor of the denoiser (one number per tensor). GSA1 (`variant: gsa1`, default):
the gradient of the mean loss over the K timesteps; GSA2: the mean over timesteps of each timestep's norms.

Classifier, as the official `test_attack_accuracy.py`: the reference (shadow) models' features of their own members
and non-members are standardised together (`sklearn.preprocessing.scale`), the target's features of the audited images
are standardised on their own (which corrects a gradient-scale shift between references and target), and an XGBoost
classifier with 200 trees at its defaults is trained on the references' rows (`classifier: xgboost`, the `xgboost`
package: `pip install diffmia[gsa]`; `classifier: gradient-boosting` is scikit-learn's GradientBoostingClassifier,
not the official one). The official script fits on a random 70% of the reference rows and prints a report on the rest;
here every reference row trains the classifier. Score = the member probability's log-odds.

References come from targets/references.py (the same recipe retrained): in online mode every pool image is IN half of
them; in offline mode each reference's public training images against an equal number of other public images.
Queries per audited image: K forward passes with a backward pass each; the target's standardisation statistics cost
the same again over the audited images (reported as `standardisation_queries`).
"""

from __future__ import annotations

from typing import Literal, Sequence

import numpy as np
import torch
from pydantic import Field

from diffmia.core.config import ConfigError
from diffmia.core.devices import to_device

from .base import AttackBatch, AttackParams, batch_of, per_sample_noise, register_attack
from .reference_attack import ReferenceAttack


def gradient_norms(
    target,
    x0: torch.Tensor,
    timesteps: Sequence[int],
    noises: torch.Tensor,
    cond: Sequence[str] | None = None,
    per_timestep: bool = False,
) -> torch.Tensor:
    """White-box access: per image, the l2 norm (torch.norm of the gradient, as the official GSA code) of the
    denoising loss's gradient w.r.t. each parameter tensor of the denoiser, (B, n_tensors). `noises` is
    (K, B, *sample_shape), one draw per timestep. GSA1 (per_timestep=False): the gradient of the mean loss over
    the K timesteps; GSA2: the mean over timesteps of each timestep's norms (norms, not squared norms). K model
    evaluations per image, counted."""
    module = target.unet
    params = list(module.parameters())
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(True)
    device = target.device  # the whole computation on the target's device; the norms come back
    t = torch.as_tensor(list(timesteps), dtype=torch.long)
    abar = to_device(target.alphas_cumprod[t].float().view(-1, *[1] * (noises.ndim - 2)), device)
    noises, t_dev = to_device(noises, device), to_device(t, device)

    def norms(loss, retain: bool = False) -> torch.Tensor:
        grads = torch.autograd.grad(loss, params, retain_graph=retain, allow_unused=True)
        return torch.stack(
            [g.double().norm() if g is not None else torch.zeros((), dtype=torch.float64, device=device) for g in grads]
        )

    out = []
    try:
        for i in range(len(x0)):
            z = target.encode(x0[i : i + 1])
            eps = noises[:, i]
            x_t = abar.sqrt() * z + (1 - abar).sqrt() * eps
            target.queries.add(len(t))
            with torch.enable_grad():
                pred = target._forward(x_t, t_dev, [cond[i]] * len(t) if cond else None)
                pred = target.to_epsilon(pred, x_t, t)  # v / x0 models: as noise
                losses = ((pred.float() - eps) ** 2).flatten(1).mean(1)
                if per_timestep:
                    out.append(sum(norms(losses[k], k + 1 < len(t)) for k in range(len(t))) / len(t))
                else:
                    out.append(norms(losses.mean()))
    finally:
        for p, f in zip(params, flags):
            p.requires_grad_(f)
    return torch.stack(out).cpu()


class GSAParams(AttackParams):
    references: int = Field(4, ge=1, le=256)
    mode: Literal["online", "offline"] = "online"
    variant: Literal["gsa1", "gsa2"] = "gsa1"
    timesteps: int = Field(10, ge=1, le=100, description="K equidistant timesteps")
    trees: int = Field(200, ge=10, le=5000, description="boosting rounds (official: 200)")
    classifier: Literal["xgboost", "gradient-boosting"] = Field(
        "xgboost", description="xgboost: the official XGBClassifier; gradient-boosting: scikit-learn's"
    )


def gsa_steps(total: int, k: int) -> list[int]:
    """The official timesteps: every (T // K)-th step, ending each stride: 99, 199, ..., 999 for T = 1000, K = 10."""
    stride = total // k
    return [(i + 1) * stride - 1 for i in range(k)]


def standardise(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Column means and scales of sklearn.preprocessing.scale (population std; a constant column keeps scale 1)."""
    mean, std = x.mean(0), x.std(0)
    return mean, np.where(std > 0, std, 1.0)


def build_classifier(kind: str, trees: int, seed: int):
    if kind == "xgboost":
        from xgboost import XGBClassifier

        return XGBClassifier(n_estimators=trees, random_state=seed)
    from sklearn.ensemble import GradientBoostingClassifier

    return GradientBoostingClassifier(n_estimators=trees, random_state=seed)


def fit_on_references(x: np.ndarray, y: np.ndarray, kind: str, trees: int, seed: int):
    """The classifier on the references' rows, standardised together."""
    mean, scale = standardise(x)
    return build_classifier(kind, trees, seed).fit((x - mean) / scale, y)


def gsa_member_probability(
    reference_x: np.ndarray,
    reference_y: np.ndarray,
    target_x: np.ndarray,
    target_scale: tuple[np.ndarray, np.ndarray] | None = None,
    kind: str = "xgboost",
    trees: int = 200,
    seed: int = 0,
) -> np.ndarray:
    """The official classifier: references standardised together, target standardised on its own statistics
    (`target_scale`, default: those of `target_x` itself), a classifier fitted on the references.

    Returns:
        The member probability of each row of `target_x`.
    """
    model = fit_on_references(reference_x, reference_y, kind, trees, seed)
    t_mean, t_scale = target_scale or standardise(target_x)
    return model.predict_proba((target_x - t_mean) / t_scale)[:, 1]


@register_attack
class GSA(ReferenceAttack):
    name = "gsa"
    access = "white-box"
    paper = "Pang et al., GSA, arXiv 2308.06405 (official code py85252876/GSA)"
    Params = GSAParams

    def check(self, params) -> None:
        super().check(params)
        if params.classifier == "xgboost":
            try:
                import xgboost  # noqa: F401
            except ImportError:
                raise ConfigError(
                    "attack gsa: classifier xgboost (the official code's) needs the xgboost package: "
                    "pip install 'diffmia[gsa]' (or set classifier: gradient-boosting)"
                ) from None

    def timesteps_used(self) -> list[int]:
        return []  # K equidistant over the target's own schedule

    def queries_per_sample(self, target) -> int:
        return self.params.timesteps

    def steps(self, target) -> list[int]:
        return gsa_steps(target.num_train_timesteps, self.params.timesteps)

    def features(self, model, batch: AttackBatch) -> np.ndarray:
        steps = self.steps(model)
        noises = torch.stack([per_sample_noise(batch.ids, model.sample_shape, self.seed, d) for d in range(len(steps))])
        return gradient_norms(
            model, batch.images, steps, noises, batch.captions, per_timestep=self.params.variant == "gsa2"
        ).numpy()

    def prepare(self, loaded, cache_dir) -> None:
        from diffmia.targets.references import pool_indices

        p = self.params
        refs = self.build_references(loaded, p.mode)

        def own_members_and_nonmembers(r, ref):
            if p.mode == "online":
                ids = pool_indices(loaded.manifest)
            else:  # its public training images and as many other public images
                members = refs.members[r].tolist()
                others = sorted(set(loaded.manifest.indices("public")) - set(members))
                rng = np.random.default_rng([self.seed, 503, r])  # per reference: the same on any process
                ids = sorted(members + rng.permutation(others)[: len(members)].tolist())
            return self.features(ref, batch_of(loaded, ids)), refs.is_in(ids)[r]

        x, y = zip(*self.over_references(loaded, own_members_and_nonmembers))
        x, y = np.concatenate(x), np.concatenate(y)
        self.classifier = fit_on_references(x, y, p.classifier, p.trees, self.seed)
        self.trained_on = int(len(y))
        # the target's own standardisation, over the audited images (the official code scales the target's members
        # and non-members together)
        audited = sorted(e.index for e, _ in loaded.manifest.audit_entries())
        before = loaded.target.queries.sample_queries
        self.target_scale = standardise(
            np.concatenate([self.features(loaded.target, part) for part in batch_of(loaded, audited).chunks(256)])
        )
        self.standardisation_queries = loaded.target.queries.sample_queries - before

    def score(self, target, batch: AttackBatch) -> torch.Tensor:
        if self.refs is None:
            raise RuntimeError("gsa: prepare() was not called (the runner does this)")
        mean, scale = self.target_scale
        proba = self.classifier.predict_proba((self.features(target, batch) - mean) / scale)[:, 1]
        proba = np.clip(proba.astype(np.float64), 1e-12, 1 - 1e-12)
        return torch.as_tensor(np.log(proba) - np.log1p(-proba), dtype=torch.float32)

    def extra_info(self) -> dict:
        return {
            **super().extra_info(),
            "classifier_trained_on": getattr(self, "trained_on", 0),
            "classifier": self.params.classifier,
            "standardisation_queries": getattr(self, "standardisation_queries", 0),
        }
