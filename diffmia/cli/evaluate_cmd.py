"""`diffmia evaluate`: the metrics of every score file of a run."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from diffmia.cli.common import app, out_path, user_errors


@app.command()
@user_errors
def evaluate(
    run: Path = typer.Argument(..., help="A run directory with scores/ from `diffmia attack`."),
    delta: float = typer.Option(1e-5, "--delta", min=0.0, max=1.0, help="delta of the empirical epsilon bound."),
    bootstrap: int = typer.Option(1000, "--bootstrap", min=0, max=100000, help="Bootstrap resamples for intervals."),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of the bootstrap."),
    out: Optional[str] = typer.Option(None, "--out", "-o", help="JSON file to write (default: RUN/metrics.json)."),
    set_sizes: Optional[str] = typer.Option(
        None, "--set-sizes", help="Also set-level AUC for these set sizes, e.g. 1,5,10,30."
    ),
) -> None:
    """Metrics for every score file of a run: calibrated AUC, TPR at 1% / 0.1% FPR, ASR, intervals, epsilon bound.
    Score files written by `diffmia run` (scores/LABEL-HASH/NAME.csv) are read too, named by their label."""
    import json

    from diffmia.core.config import ConfigError, validate
    from diffmia.core.io import write_json
    from diffmia.core.rundir import RunDir
    from diffmia.evaluate.results import EvaluationConfig, score_file_metrics
    from diffmia.evaluate.scores import ScoreFileError, read_scores
    from diffmia.targets.manifest import SplitManifest
    from diffmia.targets.runs import RunError

    out = out_path(out, file=True)
    if not Path(run).is_dir():
        raise RunError(f"{run}: folder not found")
    try:
        sizes = tuple(int(x) for x in set_sizes.split(",")) if set_sizes else ()
    except ValueError:
        raise ConfigError(f"--set-sizes: expected comma-separated integers such as 1,5,10, got {set_sizes!r}") from None
    if any(n < 1 for n in sizes):
        raise ConfigError(f"--set-sizes: set sizes must be at least 1, got {set_sizes!r}")
    scores = sorted(p for p in RunDir(run).scores.rglob("*.csv") if not p.name.startswith("."))
    if not scores:
        raise RunError(f"{RunDir(run).scores}: no score files; run `diffmia attack {run}` first")
    manifest = SplitManifest.load(RunDir(run).manifest) if RunDir(run).manifest.is_file() else None
    frames = {}
    for path in scores:  # every file checked before any metric is printed
        try:
            frames[path] = read_scores(path, manifest)
        except ScoreFileError as exc:
            raise RunError(str(exc)) from None
    ev = validate(
        {"delta": delta, "bootstrap": bootstrap, "seed": seed, "set_sizes": list(sizes)},
        EvaluationConfig,
        source="options",
    )
    results = {}
    typer.echo(
        f"{'attack':<20} {'AUC [95% CI]':>22} {'TPR@1%FPR cal.':>15} {'ASR':>6} {'eps heur.':>9} "
        f"{'eps 1-run':>9}   (test halves; eps 1-run from the canaries)"
    )
    for path in scores:
        df = frames[path]
        label = path.stem if path.parent == RunDir(run).scores else path.parent.name.rsplit("-", 1)[0]
        if label in results:  # the same attack scored by `diffmia attack` and by `diffmia run`: keep both, apart
            label = f"{label} ({path.parent.relative_to(RunDir(run).root)})"
        m, audit, curves = score_file_metrics(df, ev)
        queries = (
            json.loads(path.with_suffix(".json").read_text())["queries_per_sample"]
            if path.with_suffix(".json").is_file()
            else None
        )
        m["queries_per_sample"] = queries
        if curves is not None:
            m["set_level"] = curves
        m["one_run_audit"] = audit.to_dict() if audit else None
        results[label] = m
        lo, hi = m["auc_ci"]
        one_run = f"{audit.epsilon:9.2f}" if audit else f"{'-':>9}"
        typer.echo(
            f"{label:<20} {m['auc']:.3f} [{lo:.3f}, {hi:.3f}] {m['tpr@1%fpr']:15.3f} {m['asr']:6.3f} "
            f"{m['epsilon_lower_bound']:9.2f} {one_run}  queries {queries}"
            + ("  set AUC " + " ".join(f"L={r['set_size']}:{r['auc']:.3f}" for r in m["set_level"]) if sizes else "")
        )
    target = out or RunDir(run).root / "metrics.json"
    write_json(target, results)
    typer.echo(f"wrote {target}")
