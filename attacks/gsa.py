"""GSA: gradient-substitution attacks (Pang et al., "White-box Membership Inference Attacks against Diffusion Models",
arXiv 2308.06405), white-box: the attacker reads gradients of the target's weights.

Features per image: for K equidistant timesteps t_k = (k + 1) * T / K - 1 (99, 199, ..., 999 for T = 1000) with one
seeded noise draw each, the squared gradient norm of the denoising loss for every parameter tensor of the denoiser
(one number per tensor). GSA1 (`variant: gsa1`, default): the gradient of the mean loss over the K timesteps; GSA2: the
mean over timesteps of each timestep's squared norms. A gradient-boosting classifier (scikit-learn, 200 trees) is
trained on the reference models' own members and non-members (targets/references.py: the same recipe retrained; in
online mode every pool image is IN half of them, in offline mode each reference's public training images against an
equal number of other public images) and applied to the target: score = its member probability (log-odds).
Queries per audited image: K forward passes with a backward pass each.
"""
from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from pydantic import Field

from .base import AttackBatch, AttackParams, batch_of, per_sample_noise, register_attack
from .reference_attack import ReferenceAttack


class GSAParams(AttackParams):
    references: int = Field(4, ge=1, le=256)
    mode: Literal["online", "offline"] = "online"
    variant: Literal["gsa1", "gsa2"] = "gsa1"
    timesteps: int = Field(10, ge=1, le=100, description="K equidistant timesteps")
    trees: int = Field(200, ge=10, le=5000, description="gradient-boosting estimators")


@register_attack
class GSA(ReferenceAttack):
    name = "gsa"
    access = "white-box"
    paper = "Pang et al., GSA, arXiv 2308.06405"
    Params = GSAParams

    def timesteps_used(self) -> list[int]:
        return []  # K equidistant over the target's own schedule

    def queries_per_sample(self, target) -> int:
        return self.params.timesteps

    def steps(self, target) -> list[int]:
        total, k = target.num_train_timesteps, self.params.timesteps
        return [(i + 1) * total // k - 1 for i in range(k)]

    def features(self, model, batch: AttackBatch) -> np.ndarray:
        steps = self.steps(model)
        noises = torch.stack([per_sample_noise(batch.ids, model.sample_shape, self.seed, d) for d in range(len(steps))])
        norms = model.gradient_norms(batch.images, steps, noises, batch.captions,
                                     per_timestep=self.params.variant == "gsa2")
        return np.log(norms.numpy() + 1e-30)

    def prepare(self, loaded, cache_dir) -> None:
        from sklearn.ensemble import GradientBoostingClassifier

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
        self.classifier = GradientBoostingClassifier(n_estimators=p.trees, random_state=self.seed)
        self.classifier.fit(np.concatenate(x), np.concatenate(y))
        self.trained_on = int(sum(len(v) for v in y))

    def score(self, target, batch: AttackBatch) -> torch.Tensor:
        if self.refs is None:
            raise RuntimeError("gsa: prepare() was not called (the runner does this)")
        feats = self.features(target, batch)
        proba = self.classifier.predict_proba(feats)[:, 1].clip(1e-12, 1 - 1e-12)
        return torch.as_tensor(np.log(proba) - np.log1p(-proba), dtype=torch.float32)

    def extra_info(self) -> dict:
        return {**super().extra_info(), "classifier_trained_on": getattr(self, "trained_on", 0)}
