"""The Python API: the same work as `diffmia run` and `diffmia audit`, for notebooks and scripts.

    import diffmia

    results = diffmia.run("configs/quickstart.yaml", out="runs/quickstart")
    results.table()            # one row per (recipe, attack): AUC, calibrated TPR at 1% FPR, ...
    results.strongest()        # each recipe's strongest attack, by the report's rule
    results.report             # path of report.html

    audit = diffmia.audit("my-model/", members="train-images/", nonmembers="held-out/")

Both write the same results folder as the command line (and resume from its caches), and return a `Results`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

from diffmia.core.config import ConfigError
from diffmia.core.logs import progress_lines
from diffmia.core.parallel import reference_jobs

logger = logging.getLogger(__name__)


@dataclass
class Results:
    """A results folder as `diffmia run` / `diffmia audit` wrote it.

    Attributes:
        folder: The results folder.
        data: Its results.json: `rows` (one per recipe and attack), `recipes` (configs, counts, utility, the
            headline one-run epsilon), `evaluation`, `environment`.
    """

    folder: Path
    data: dict[str, Any]

    @property
    def report(self) -> Path | None:
        """The HTML report (None when no attack applied)."""
        return Path(self.data["report"]) if self.data.get("report") else None

    @property
    def rows(self) -> list[dict[str, Any]]:
        """One dict per (recipe, attack), as in results.csv."""
        return self.data["rows"]

    def table(self):
        """results.csv as a pandas DataFrame."""
        import pandas as pd

        return pd.DataFrame(self.rows)

    def strongest(self) -> dict[str, dict[str, Any]]:
        """Each recipe's strongest attack row, chosen by the report's rule (diffmia.evaluate.verdict)."""
        from diffmia.evaluate.verdict import strongest

        by_recipe: dict[str, list[dict]] = {}
        for row in self.rows:
            by_recipe.setdefault(row["recipe"], []).append(row)
        return {recipe: strongest(rows) for recipe, rows in by_recipe.items()}

    @classmethod
    def load(cls, folder: str | Path) -> "Results":
        """Open a results folder written earlier.

        Raises:
            RunError: The folder has no results.json.
        """
        from diffmia.core.io import read_json
        from diffmia.targets.runs import RunError

        folder = Path(folder)
        if not (folder / "results.json").is_file():
            raise RunError(f"{folder}: no results.json here")
        return cls(folder, read_json(folder / "results.json"))


def run(
    config: str | Path,
    out: str | Path | None = None,
    overrides: Sequence[str] = (),
    only: Iterable[str] | None = None,
    show_examples: bool = False,
    executor: str = "inline",
    slurm: dict[str, Any] | None = None,
    progress: bool = True,
    quiet: bool = False,
) -> Results:
    """Run a benchmark: train every recipe, run every attack, measure FID, write results and the report.

    Args:
        config: The benchmark YAML (recipes x attacks, utility, evaluation).
        out: The results folder (default: runs/NAME of the benchmark).
        overrides: `dotted.key=value` overrides, as `--set` takes them.
        only: Run only these recipes.
        show_examples: Embed the most exposed member images in the report.
        executor: "inline" (this process), "local" or "slurm" (one submitit job per recipe).
        slurm: submitit parameters for the Slurm executor.
        progress: Show progress bars.
        quiet: Show no progress lines (they go to the "diffmia" logger; shown on stdout unless it has handlers).

    Returns:
        The results folder's contents.

    Raises:
        ConfigError: A bad config, override, recipe name or executor.
    """
    with progress_lines(not quiet):
        from diffmia.evaluate.exposure import show_members
        from diffmia.evaluate.report import write_report
        from diffmia.matrix import load_benchmark, run_matrix

        bench, recipes = load_benchmark(config, list(overrides))
        if only:
            only = list(only)
            names = [r.name for r in bench.recipes]  # a recipe runs with all its seeds
            unknown = sorted(set(only) - set(names))
            if unknown:
                raise ConfigError(f"--only: {config} has no recipe {', '.join(unknown)}; it has {', '.join(names)}")
            bench = bench.model_copy(update={"recipes": [r for r in bench.recipes if r.name in only]})
        out = Path(out) if out is not None else Path("runs") / bench.name
        if executor not in ("inline", "local", "slurm"):
            raise ConfigError(f"--executor: expected inline, local or slurm, got {executor!r}")
        if executor != "inline":
            from diffmia.core.io import write_json
            from diffmia.executor import submit

            out.mkdir(parents=True, exist_ok=True)
            write_json(out / "benchmark.json", bench.model_dump(mode="json"))
            submit(config, list(overrides), [r.name for r in bench.recipes], out, executor, slurm=slurm or {})
            logger.info("all jobs done; collecting the cached cells")
        results = run_matrix(bench, recipes, out, progress=progress)
        if show_examples:
            results["report"] = str(write_report(out, results, show_members(out, results)))
        return Results(out, results)


def audit(
    model: str | Path,
    members: str | Path,
    nonmembers: str | Path,
    out: str | Path | None = None,
    access: str = "gray-box",
    public: str | Path | None = None,
    recipe: str | Path | None = None,
    adapter: str | Path | None = None,
    attacks: Sequence[str] | None = None,
    attack_params: dict[str, dict[str, Any]] | None = None,
    seed: int = 0,
    calibration_fraction: float = 0.5,
    near_duplicates: float = 0.01,
    batch_size: int | None = None,
    bootstrap: int = 1000,
    allow_outside_paths: bool = False,
    progress: bool = True,
    quiet: bool = False,
    precision: str = "fp32",
    groups: str | None = None,
    train_command: str | None = None,
    train_env: Sequence[str] | None = None,
    reference_executor: str | None = None,
    slurm: dict[str, Any] | None = None,
) -> Results:
    """Audit a model trained elsewhere: every attack its access level allows, on the given members and non-members.

    Args:
        model: A diffusers folder (DDPMPipeline, a diffmia text pipeline, StableDiffusionPipeline).
        members: An image folder (captions in metadata.jsonl for text models) or a CSV list of paths.
        nonmembers: The same for images known not to be in training.
        out: The results folder (default: runs/audit-MODELNAME).
        access: "gray-box" (noise predictions), "black-box" (generated images only) or "white-box" (gradients).
        public: Public images of the same distribution (quantile regression, offline references, word importance).
        recipe: The team's training recipe (a diffmia target YAML): adds the reference-model attacks.
        adapter: A LoRA merged into the model: a peft adapter folder or a diffusers LoRA file.
        attacks: Only these attacks.
        attack_params: {attack: {parameter: value}}, as `--set ATTACK.KEY=VALUE`.
        seed: Seed of the halves' hash and of the attacks' noise.
        calibration_fraction: Share of each side that fits thresholds.
        near_duplicates: Members and non-members closer than this (RMS pixel difference) are refused as duplicates.
        batch_size: Images per batch (None: the device's default).
        bootstrap: Bootstrap resamples for the intervals.
        allow_outside_paths: Let a CSV list name files outside its folder.
        progress: Show progress bars.
        quiet: Show no progress lines (they go to the "diffmia" logger; shown on stdout unless it has handlers).
        precision: fp32 (exact), bf16 or fp16: the denoiser runs under autocast.
        groups: Risk per group: "caption:WORD,..." or a CSV with path and group columns (evaluate/groups.py).
        train_command: The team's training command for the reference models, instead of `recipe`: a shell line
            naming {data} (an image folder with metadata.jsonl) and {out} (where it saves), and {seed}.
        train_env: Environment variables whose values change what the command trains (its cache key).
        reference_executor: "slurm" (a Slurm job array) or "local": each missing reference one submitit job.
        slurm: submitit's Slurm parameters for it.

    Returns:
        The results folder's contents.

    Raises:
        DataError: Unreadable, mis-sized or duplicated images.
        ModelError: A model or adapter folder that does not load.
        ConfigError: A bad access level, attack name or parameter.
    """
    with progress_lines(not quiet), reference_jobs(reference_executor, slurm):
        from diffmia.auditor import audit_model

        model = Path(model)
        out = Path(out) if out is not None else Path("runs") / f"audit-{model.resolve().name}"
        results = audit_model(
            model,
            Path(members),
            Path(nonmembers),
            out,
            access,
            Path(public) if public else None,
            Path(recipe) if recipe else None,
            seed,
            calibration_fraction,
            near_duplicates,
            list(attacks) if attacks else None,
            batch_size,
            bootstrap,
            progress=progress,
            adapter=Path(adapter) if adapter else None,
            attack_params=attack_params or {},
            allow_outside=allow_outside_paths,
            precision=precision,
            groups=groups,
            train_command=train_command,
            train_env=list(train_env or []),
        )
        return Results(out, results)
