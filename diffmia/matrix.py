"""The matrix runner behind `diffmia run`: train every recipe, run every attack on it, measure utility, derive the
metrics, write results.csv / results.json, the plots and the report.

Every cell is cached by a hash of its resolved config: a recipe trains into recipes/NAME-HASH/ (resumed from its last
checkpoint after a kill), an attack's scores are reused when their sidecar records the same hash, and utility is
stored as utility-HASH.json. A rerun skips finished cells; every file is written atomically.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from pathlib import Path
from typing import Any, Optional

from pydantic import Field, model_validator

from diffmia.core.config import (
    ConfigError,
    StrictModel,
    TargetConfig,
    apply_overrides,
    dump_config,
    load_config,
    read_yaml_mapping,
    validate,
)
from diffmia.core.config import recipe_hash as recipe_hash_of
from diffmia.core.devices import resolve_batch_size
from diffmia.core.io import read_json, write_json
from diffmia.core.registries import TARGETS
from diffmia.evaluate import fid as fid_module
from diffmia.evaluate.fid import UtilityConfig
from diffmia.evaluate.results import EvaluationConfig, cell_row, write_results

logger = logging.getLogger(__name__)


class RecipeEntry(StrictModel):
    name: str = Field(..., pattern=r"^[A-Za-z0-9_.+-]+$", description="short name used in tables and folder names")
    config: str = Field(..., description="target recipe YAML, relative to the benchmark file")
    set: list[str] = Field(default_factory=list, description="overrides, e.g. ['train.steps=500']")
    seeds: int = Field(
        1,
        ge=1,
        le=20,
        description="trainings of the recipe: seed, seed+1, ... (each draws its own split and training noise); the "
        "copies are recipes NAME+seedK and the report gives the spread across them",
    )

    def names(self) -> list[tuple[str, Optional[str]]]:
        """(recipe name, the recipe it retrains or None) for each of its seeds."""
        return [(self.name, None)] + [(f"{self.name}+seed{k}", self.name) for k in range(1, self.seeds)]


class AttackEntry(StrictModel):
    name: str
    label: Optional[str] = Field(None, pattern=r"^[A-Za-z0-9_.+=,()-]+$", description="name in tables (default: name)")
    params: dict[str, Any] = Field(default_factory=dict)
    tune: dict[str, list[Any]] = Field(
        default_factory=dict,
        description="parameters chosen on the calibration split: {name: [candidates]} (attacks/tuning.py)",
    )

    @property
    def display(self) -> str:
        return self.label or self.name


class BenchmarkConfig(StrictModel):
    name: str = "benchmark"
    recipes: list[RecipeEntry] = Field(..., min_length=1)
    attacks: list[AttackEntry] = Field(..., min_length=1)
    attack_seed: int = Field(0, ge=0)
    attack_batch_size: Optional[int] = Field(None, ge=1, description="default: 256 on CPU, 1024 on a GPU")
    utility: UtilityConfig = UtilityConfig()
    evaluation: EvaluationConfig = EvaluationConfig()

    @model_validator(mode="after")
    def _unique(self) -> "BenchmarkConfig":
        for kind, names in (
            ("recipe", [n for r in self.recipes for n, _ in r.names()]),  # seeds: N adds NAME+seedK
            ("attack label", [a.display for a in self.attacks]),
        ):
            dup = {n for n in names if names.count(n) > 1}
            if dup:
                raise ValueError(f"{kind} names must be unique; repeated: {sorted(dup)}")
        return self


def config_hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


def load_benchmark(
    path: str | Path, overrides: list[str] | None = None
) -> tuple[BenchmarkConfig, dict[str, TargetConfig]]:
    """Validate the benchmark and every recipe and attack it names (every tuning combination too) before any work
    starts."""
    from diffmia.attacks import build_attack
    from diffmia.attacks.runner import timesteps_beyond
    from diffmia.attacks.tuning import check_grid

    path = Path(path)
    data = apply_overrides(read_yaml_mapping(path), list(overrides or []))
    bench = validate(data, BenchmarkConfig, source=str(path))
    recipes = {}
    for i, entry in enumerate(bench.recipes):
        recipe_path = (path.parent / entry.config).resolve()
        try:
            cfg = load_config(recipe_path, entry.set)
        except ConfigError as exc:
            raise ConfigError(f"{path}: recipes.{i} ({entry.name}): {exc}") from None
        for k, (name, _) in enumerate(entry.names()):
            recipes[name] = cfg if k == 0 else cfg.model_copy(update={"seed": cfg.seed + k})
    for i, entry in enumerate(bench.attacks):
        try:
            variants = [build_attack(entry.name, entry.params, seed=bench.attack_seed)]
            if entry.tune:
                variants += check_grid(entry.name, entry.params, entry.tune, bench.attack_seed)
        except (ConfigError, KeyError) as exc:
            raise ConfigError(f"{path}: attacks.{i}: {exc}") from None
        for name, cfg in recipes.items():  # a timestep beyond a recipe's schedule, caught before any training
            limit = cfg.scheduler.num_train_timesteps
            beyond = (
                [t for a in variants for t in timesteps_beyond(a, limit)]
                if not TARGETS.get(cfg.model.kind).pretrained  # a pretrained pipeline brings its own schedule
                else []
            )
            if beyond:
                raise ConfigError(
                    f"{path}: attacks.{i} ({entry.display}): timestep {max(beyond)} is beyond recipe "
                    f"{name}'s schedule of {limit} diffusion steps (0..{limit - 1})"
                )
    return bench, recipes


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+=-]+", "_", text)


def run_matrix(
    bench: BenchmarkConfig,
    recipes: dict[str, TargetConfig],
    out: str | Path,
    progress: bool = True,
    write_outputs: bool = True,
) -> dict:
    """Every recipe (claimed atomically, so several workers on one folder share the work), then results, exposure
    and report (unless write_outputs is False: a worker job of an executor)."""
    from diffmia.attacks import build_attack
    from diffmia.attacks.reuse import ScoredRows
    from diffmia.attacks.tuning import score_attack
    from diffmia.evaluate.fid import compute_utility
    from diffmia.evaluate.scores import ScoreFileError, read_scores
    from diffmia.targets.runs import load_run
    from diffmia.targets.train import train_target

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "benchmark.json", bench.model_dump(mode="json"))
    rows, recipe_info, data_of = [], {}, {}

    def process(name: str, seed_of: str | None) -> None:
        cfg = recipes[name]
        recipe_hash = recipe_hash_of(cfg)
        run_dir = out / "recipes" / f"{name}-{recipe_hash}"
        t0 = time.time()
        if (run_dir / "summary.json").is_file():
            logger.info(f"[{name}] trained target found, reusing {run_dir}")
        else:
            logger.info(f"[{name}] training ({cfg.train.steps} steps) -> {run_dir}")
            train_target(cfg, run_dir, resume=True, progress=progress, cache_dir=out / "cache")
        loaded = load_run(run_dir)
        data_of[name] = (loaded.images, loaded.manifest)
        summary = read_json(run_dir / "summary.json")

        utility = None
        if bench.utility.enabled:
            util_hash = config_hash(
                {
                    "recipe": recipe_hash,
                    "utility": bench.utility.model_dump(mode="json"),
                    "version": fid_module.UTILITY_VERSION,
                }
            )
            util_path = run_dir / f"utility-{util_hash}.json"
            if util_path.is_file():
                utility = read_json(util_path)
            else:
                logger.info(f"[{name}] utility: {bench.utility.samples} samples, {bench.utility.features} features")
                utility = compute_utility(
                    loaded, bench.utility, out / "cache", run_dir / "samples.png", progress=progress
                )
                write_json(util_path, utility)
        recipe_info[name] = {
            "run_dir": os.path.relpath(run_dir, out),
            "config_hash": recipe_hash,
            "config": dump_config(cfg),
            "manifest_sha256": hashlib.sha256((run_dir / "manifest.json").read_bytes()).hexdigest(),
            "counts": {r: len(getattr(loaded.manifest, r)) for r in ("members", "nonmembers", "public")},
            "gap": summary.get("gap"),
            "train_seconds": summary.get("train_seconds_this_session"),
            "parameters": summary.get("parameters"),
            "utility": utility,
            "manifest_extra": loaded.manifest.extra,
        }
        if seed_of:
            recipe_info[name]["seed_of"] = seed_of

        batch_size = resolve_batch_size(
            bench.attack_batch_size, "matrix_attack", loaded.target.device, loaded.target.image_shape
        )
        known = ScoredRows()  # a tuning candidate equal to a cell already scored (the paper default) is not redone
        for attack_entry in bench.attacks:
            attack = build_attack(attack_entry.name, attack_entry.params, seed=bench.attack_seed)
            label = attack_entry.display
            cell = {
                "recipe": recipe_hash,
                "attack": attack.name,
                "params": attack.params.model_dump(mode="json"),
                "seed": bench.attack_seed,
            }
            if attack_entry.tune:
                cell["tune"] = attack_entry.tune
            cell_hash = config_hash(cell)
            scores_dir = run_dir / "scores" / f"{_slug(label)}-{cell_hash}"
            csv_path = scores_dir / f"{attack.name}.csv"
            scores = None
            if csv_path.is_file() and (scores_dir / f"{attack.name}.json").is_file():
                try:
                    scores = read_scores(csv_path, loaded.manifest)
                    info = read_json(scores_dir / f"{attack.name}.json")
                    known.add_frame(build_attack(attack.name, info["params"], seed=bench.attack_seed), scores)
                except (ScoreFileError, ValueError, KeyError) as exc:  # never read a partial cell: score it again
                    logger.info(f"[{name}] {label}: cached scores unusable ({exc}); scoring again")
                    scores = None
            if scores is None:
                logger.info(f"[{name}] attack {label}")
                result = score_attack(
                    loaded,
                    attack_entry.name,
                    attack_entry.params,
                    attack_entry.tune,
                    bench.attack_seed,
                    scores_dir,
                    batch_size=batch_size,
                    progress=progress,
                    known=known,
                    on_chosen=lambda chosen: logger.info(f"[{name}] {label}: chosen on calibration {chosen}"),
                )
                scores, info = result.scores, result.info
            rows.append(
                cell_row(
                    name,
                    label,
                    attack,
                    scores,
                    info,
                    loaded,
                    bench.evaluation,
                    recipe_info[name],
                    {
                        "defenses": "+".join(d["name"] for d in cfg.defenses) or "none",
                        "dp_epsilon": summary.get("dp_epsilon"),
                        "train_seconds": summary.get("train_seconds_this_session"),
                    },
                    os.path.relpath(csv_path, out),
                    utility,
                )
            )
        logger.info(f"[{name}] done in {time.time() - t0:.0f}s")

    from diffmia.core.claims import claim, wait_for_claim

    deferred = []
    expanded = [item for entry in bench.recipes for item in entry.names()]  # seeds: N -> NAME, NAME+seed1, ...
    for name, seed_of in expanded:  # a recipe another worker holds is left to it, and collected afterwards
        claim_path = out / "claims" / f"{name}-{recipe_hash_of(recipes[name])}.claim"
        with claim(claim_path) as mine:
            if mine:
                process(name, seed_of)
            else:
                logger.info(f"[{name}] another worker holds {claim_path}; collecting it when done")
                deferred.append((name, seed_of, claim_path))
    for name, seed_of, claim_path in deferred:
        wait_for_claim(claim_path)
        with claim(claim_path, wait=True) as mine:
            process(name, seed_of)  # cached, unless the other worker died: then finished here
    if not write_outputs:
        return {"rows": rows, "recipes": recipe_info}
    order = {name: i for i, (name, _) in enumerate(expanded)}
    rows.sort(key=lambda r: order[r["recipe"]])  # stable: attacks keep their order within a recipe
    recipe_info = {name: recipe_info[name] for name in sorted(recipe_info, key=order.get)}

    from diffmia.core.environment import environment

    results = {
        "benchmark": bench.name,
        "recipes": recipe_info,
        "rows": rows,
        "evaluation": bench.evaluation.model_dump(mode="json"),
        "environment": environment(),
    }
    return write_results(out, results, data_of)
