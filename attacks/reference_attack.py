"""The base of the attacks that need reference models (LiRA, RMIA, GSA): it asks targets/references.py for them in
prepare(), runs a per-model computation over each, counts the references' queries apart from the target's, and
records what the references cost next to the attack's scores.
"""

from __future__ import annotations

import sys
from typing import Callable

import numpy as np

from diffmia.core import parallel
from diffmia.core.config import ConfigError

from .base import Attack


class ReferenceAttack(Attack):
    access = "gray-box"
    needs_references = True

    def check(self, params) -> None:
        if getattr(params, "mode", "offline") == "online" and params.references % 2:
            raise ConfigError(
                f"attack {self.name}: online references come in complementary pairs; references must be "
                f"even, got {params.references}"
            )
        self.refs = None
        self.reference_queries = 0
        self.position: dict[int, int] = {}

    def build_references(self, loaded, mode: str):
        from diffmia.targets.references import reference_models

        self.refs = reference_models(loaded, self.params.references, mode, seed=self.seed, progress=sys.stderr.isatty())
        return self.refs

    def over_references(self, loaded, compute: Callable) -> list:
        """compute(r, reference target) for every reference, one loaded at a time; their queries are counted apart.
        Under torchrun / accelerate launch process p computes every world-th reference and the results are gathered
        (each reference's computation is the same on any process, so the list is the one-process list)."""
        world, rank = parallel.processes()
        out, queries = {}, 0
        for r in range(rank, len(self.refs), world):
            ref = self.refs.target(r, loaded.target.device)
            out[r] = compute(r, ref)
            queries += ref.queries.sample_queries
        if world > 1:
            from accelerate.utils import gather_object

            gathered = gather_object([(out, queries)])
            out = {r: value for part, _ in gathered for r, value in part.items()}
            queries = sum(q for _, q in gathered)
        self.reference_queries += queries
        return [out[r] for r in range(len(self.refs))]

    def positions(self, ids) -> np.ndarray:
        """Where each of `ids` sits in the arrays prepare() computed; a clear error for images it did not see."""
        if self.refs is None:
            raise RuntimeError(f"{self.name}: prepare() was not called (the runner does this)")
        missing = [int(i) for i in ids if int(i) not in self.position]
        if missing:
            raise ConfigError(
                f"attack {self.name}: images {missing[:5]} are not among those prepared from the references"
            )
        return np.asarray([self.position[int(i)] for i in ids])

    def extra_info(self) -> dict:
        info = {"reference_queries": self.reference_queries}
        if self.refs is not None:
            info["references"] = self.refs.info()
        return info
