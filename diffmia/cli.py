"""The `diffmia` command line (typer). Each command takes a YAML config (or a run directory made from one),
repeatable `--set dotted.key=value` overrides and `--out DIR`. Bad input exits with code 2 and a one-line error."""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Callable, List, Optional

import typer

from diffmia.attacks import ATTACKS  # the names alone: no torch
from diffmia.core.errors import DiffmiaError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="diffmia: does this diffusion training recipe leak which images it was trained on?",
)


def _version(value: bool) -> None:
    if value:
        from diffmia import __version__

        typer.echo(f"diffmia {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
    threads: Optional[int] = typer.Option(
        None,
        "--threads",
        min=1,
        max=1024,
        help="torch CPU threads (default: the CPUs "
        "this process may use, from its affinity and cgroup quota; env DIFFMIA_THREADS).",
    ),
    jobs: Optional[int] = typer.Option(
        None,
        "--jobs",
        "-j",
        min=1,
        max=256,
        help="Reference models trained at once, each "
        "in its own process with threads/jobs threads (default 1; env DIFFMIA_JOBS).",
    ),
) -> None:
    """diffmia: does this diffusion training recipe leak which images it was trained on?"""
    from diffmia.core import parallel

    try:  # a help request prints and exits: no torch to configure (start-up time)
        parallel.configure(threads, jobs, apply="--help" not in sys.argv[1:])
    except ValueError as exc:  # a bad DIFFMIA_THREADS / DIFFMIA_JOBS in the environment
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


SetOption = typer.Option(None, "--set", "-s", help="Override a config value, e.g. --set train.steps=500 (repeatable).")


def user_errors(fn: Callable) -> Callable:
    """Turn the errors a user can fix (bad config, data, manifest, run, name) into one line on stderr and exit 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        import os

        try:
            return fn(*args, **kwargs)
        except DiffmiaError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        except (
            OSError
        ) as exc:  # a full disk, a read-only folder, a path that is a file: one line (DIFFMIA_DEBUG=1: all)
            if os.environ.get("DIFFMIA_DEBUG"):
                raise
            where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
            typer.echo(
                f"error: {where}{exc.strerror or exc} (nothing half-written is kept; rerun when fixed)", err=True
            )
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            typer.echo(f"\ninterrupted. {INTERRUPTED.get(fn.__name__, 'Nothing half-written is kept.')}", err=True)
            raise typer.Exit(130) from None

    return wrapper


INTERRUPTED = {
    "run": "Finished cells are cached: rerun the same command to resume.",
    "attack": "Score files are written whole or not at all: rerun the same command.",
}


def dotted_values(texts: Optional[List[str]]) -> dict:
    """key=value texts (--set of an attack, --slurm) as {dotted.key: YAML-typed value}."""
    from diffmia.core.config import parse_override

    out = {}
    for text in texts or []:
        keys, value = parse_override(text)
        out[".".join(keys)] = value
    return out


def refuse_launch(command: str, instead: str) -> None:
    """A command that is not launcher-aware, started under torchrun / accelerate launch with several processes: a
    clear error rather than processes that each redo the work, race on its files or wait forever on each other."""
    import os

    from diffmia.core.config import ConfigError

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError(
            f"diffmia {command} does not run under a multi-process launcher (WORLD_SIZE="
            f"{os.environ['WORLD_SIZE']}): {instead}"
        )


def out_path(value: Optional[str], flag: str = "--out", file: bool = False) -> Optional[Path]:
    """Check an output path before any work: not empty (an unset shell variable), a folder where a folder is
    written (a file where a file is), and somewhere writable."""
    import os

    from diffmia.core.config import ConfigError

    if value is None:
        return None
    if not value.strip():
        raise ConfigError(
            f"{flag} is empty (an unset shell variable?): name the {'file' if file else 'folder'} to write"
        )
    path = Path(value)
    if file and path.is_dir():
        raise ConfigError(f"{flag} {path}: is a folder; name a file to write")
    if not file and path.exists() and not path.is_dir():
        raise ConfigError(f"{flag} {path}: exists and is not a folder")
    existing = path if path.exists() else next((a for a in path.absolute().parents if a.exists()), Path("/"))
    if not existing.is_dir():
        raise ConfigError(f"{flag} {path}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{flag} {path}: {existing} is not writable")
    return path


@app.command()
@user_errors
def train(
    config: Path = typer.Argument(..., help="Target recipe (YAML), e.g. configs/digits-ddpm.yaml."),
    out: str = typer.Option(..., "--out", "-o", help="Run directory to write (target, manifest, log, checkpoints)."),
    set_: Optional[List[str]] = SetOption,
    resume: bool = typer.Option(False, "--resume", help="Continue from the latest checkpoint in --out."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Train a target: split the data, train with accelerate, save the target and the member/non-member loss gap."""
    from diffmia.core.config import load_config
    from diffmia.core.io import read_json
    from diffmia.targets.train import train_target

    out = out_path(out)
    cfg = load_config(config, set_ or [])
    try:
        run = train_target(cfg, out, resume=resume, progress=progress)
    except KeyboardInterrupt:
        from diffmia.core.rundir import RunDir
        from diffmia.targets.train import latest_checkpoint

        last = latest_checkpoint(RunDir(out))
        where = f"the last checkpoint is {last}" if last else "no checkpoint was written yet"
        typer.echo(
            f"\ninterrupted: {where}. Resume with: diffmia train {config} --out {out} --resume"
            + "".join(f" --set {s_!r}" for s_ in set_ or []),
            err=True,
        )
        raise typer.Exit(130) from None
    from diffmia.core.parallel import finish_processes, processes

    if processes()[1] != 0:  # under torchrun / accelerate launch: the main process reports
        finish_processes()
        return
    summary = read_json(run.summary)
    typer.echo(f"target: {run.target}")
    for t, row in summary["gap"].items():
        typer.echo(
            f"  t={t:>4}: loss members {row['members']:.4f}  non-members {row['nonmembers_test']:.4f}  ratio {row['ratio']:.2f}"
        )
    finish_processes()


@app.command()
@user_errors
def sample(
    run: Path = typer.Argument(..., help="A trained run directory."),
    out: str = typer.Option("samples.png", "--out", "-o", help="PNG grid to write."),
    n: int = typer.Option(64, "--n", min=1, max=4096, help="Number of images."),
    steps: int = typer.Option(50, "--steps", min=1, max=1000, help="Denoising steps."),
    sampler: str = typer.Option("ddim", "--sampler", help="ddim (eta=0) or ddpm (ancestral)."),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of the initial noise."),
    prompt: Optional[List[str]] = typer.Option(
        None, "--prompt", "-p", help="Text targets: prompt(s), cycled over the n images."
    ),
    guidance: float = typer.Option(
        3.0, "--guidance", min=1.0, max=30.0, help="Text targets: classifier-free guidance scale."
    ),
) -> None:
    """Draw samples from a trained target and save them as a PNG grid."""
    import torch

    from diffmia.core.config import ConfigError
    from diffmia.targets.images import grid_png
    from diffmia.targets.runs import load_run

    out = out_path(out, file=True)
    if sampler not in ("ddim", "ddpm"):
        raise ConfigError(f"--sampler: expected ddim or ddpm, got {sampler!r}")
    loaded = load_run(run)
    if prompt and not loaded.target.conditional:
        raise ConfigError(f"--prompt: {run} is an unconditional target")
    prompts = [prompt[i % len(prompt)] for i in range(n)] if prompt else None
    images = loaded.target.generate(
        n, prompts, steps=steps, sampler=sampler, guidance_scale=guidance, generator=torch.Generator().manual_seed(seed)
    )
    typer.echo(f"wrote {grid_png(images, out)} ({n} images, {sampler}, {steps} steps)")


@app.command()
@user_errors
def utility(
    run: Path = typer.Argument(..., help="A trained run directory."),
    out: Optional[str] = typer.Option(None, "--out", "-o", help="JSON to write (default: RUN/utility.json)."),
    set_: Optional[List[str]] = typer.Option(
        None,
        "--set",
        "-s",
        help="A utility setting as KEY=VALUE, e.g. samples=1024, features=clip, features_path=DIR (repeatable).",
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """FID and KID of the target's samples against its held-out non-members, beside the floor (members against the
    same non-members). Under torchrun / accelerate launch each process draws every N-th batch of samples: the same
    images, hence the same numbers, as one process."""
    from diffmia.core.config import validate
    from diffmia.core.io import write_json
    from diffmia.core.parallel import finish_processes, processes
    from diffmia.core.rundir import default_cache_dir
    from diffmia.evaluate.fid import UtilityConfig, compute_utility
    from diffmia.targets.runs import load_run

    target_file = out_path(out, file=True) or run / "utility.json"
    cfg = validate(dotted_values(set_), UtilityConfig, source="--set")
    loaded = load_run(run)
    result = compute_utility(loaded, cfg, default_cache_dir(), progress=progress)
    if processes()[1] == 0:
        write_json(target_file, {**result, "run": str(run), "utility": cfg.model_dump(mode="json")})
        typer.echo(
            f"{result['fid_label']}: {result['fid']:.3f} (floor {result['fid_floor']:.3f}), KID "
            f"{result['kid']:.4f} (floor {result['kid_floor']:.4f}); {cfg.samples} samples, "
            f"{result['reference']} non-members -> {target_file}"
        )
    finish_processes()


@app.command()
@user_errors
def data(
    config: Path = typer.Argument(..., help="Target recipe (YAML); only its data section and seed are used."),
    out: str = typer.Option(..., "--out", "-o", help="Folder for manifest.json and the member / non-member grids."),
    set_: Optional[List[str]] = SetOption,
) -> None:
    """Make the split manifest for a recipe and show its members and non-members as PNG grids."""
    from diffmia.core.config import load_config
    from diffmia.targets.data import load_dataset
    from diffmia.targets.images import grid_png
    from diffmia.targets.manifest import SplitManifest

    out = out_path(out)
    cfg = load_config(config, set_ or [])
    images = load_dataset(cfg.data)
    dataset = {"name": cfg.data.dataset, "path": cfg.data.path, "resolution": cfg.data.resolution}
    manifest = SplitManifest.create(
        images,
        cfg.data.members,
        cfg.data.nonmembers,
        cfg.seed,
        cfg.data.calibration_fraction,
        dataset,
        canaries=cfg.data.canaries,
    )
    out.mkdir(parents=True, exist_ok=True)
    manifest.save(out / "manifest.json")
    for role in ("members", "nonmembers"):
        grid_png(
            images.tensor(manifest.indices(role)[:64], cfg.data.resolution), out / f"{role}.png", private=True
        )  # member (and non-member) images: owner-only
    counts = manifest.to_dict()["counts"]
    typer.echo(
        f"{images.name}: {len(images)} images -> {counts}; wrote {out / 'manifest.json'}, members.png, nonmembers.png"
    )


@app.command()
@user_errors
def attack(
    run: Path = typer.Argument(..., help="A trained run directory."),
    attack_name: str = typer.Option(
        "all",
        "--attack",
        "-a",
        help="Attack name, or 'all' for every gray-box attack that "
        "fits the target and needs no reference models. Attacks: " + ", ".join(ATTACKS.names()) + ".",
    ),
    set_: Optional[List[str]] = SetOption,
    tune_: Optional[List[str]] = typer.Option(
        None, "--tune", help="Choose a parameter on the calibration split: --tune timestep=50,100,200 (repeatable)."
    ),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of the attack's noise draws."),
    batch_size: Optional[int] = typer.Option(
        None,
        "--batch-size",
        min=1,
        max=65536,
        help="Images per batch of model calls (default: 128 on CPU, 512 on a GPU).",
    ),
    out: Optional[str] = typer.Option(None, "--out", "-o", help="Folder for the scores (default: RUN/scores)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
    precision: str = typer.Option(
        "fp32",
        "--precision",
        help="fp32 (exact), bf16 or fp16: the denoiser runs under "
        "autocast (faster on GPUs; scores within the README's stated tolerance).",
    ),
) -> None:
    """Score the run's members and non-members with an attack; write scores/NAME.csv and print test-half metrics.

    --set takes the attack's parameters, e.g. --set k=5 --set aggregation=centroid."""
    from diffmia.attacks import ATTACKS, build_attack
    from diffmia.attacks.runner import run_attack
    from diffmia.core.config import ConfigError, parse_override
    from diffmia.evaluate.metrics import auc, rates_at, threshold_for_fpr
    from diffmia.targets.runs import load_run

    out = out_path(out)
    params = dotted_values(set_)
    loaded = load_run(run)
    try:
        loaded.target.set_precision(precision)
    except ValueError as exc:
        raise ConfigError(f"--precision: {exc}") from None
    grid = {}
    for text in tune_ or []:
        keys, value = parse_override(text)
        values = value if isinstance(value, list) else [parse_override(f"x={v}")[1] for v in str(value).split(",")]
        grid[".".join(keys)] = values
    if attack_name == "all":  # every gray-box attack that fits the target (reference attacks train models: name them)
        names = [
            n
            for n in ATTACKS.names()
            if ATTACKS.get(n).access == "gray-box"
            and not ATTACKS.get(n).needs_references
            and (loaded.target.conditional or not ATTACKS.get(n).needs_captions)
        ]
        if params or grid:
            raise ConfigError("--set and --tune apply to one attack; name it with --attack")
    else:
        names = [attack_name]
    attacks = [build_attack(name, params, seed=seed) for name in names]  # validate all before any work
    from diffmia.attacks.runner import check_attack_fits
    from diffmia.attacks.tuning import check_grid

    for atk in attacks + (check_grid(attack_name, params, grid, seed) if grid else []):
        check_attack_fits(loaded, atk)
    from diffmia.core.parallel import finish_processes, processes

    if processes()[1] != 0:  # under `accelerate launch`: only the main process speaks
        typer.echo = lambda *a, **k: None  # type: ignore[assignment]
    typer.echo(
        f"{'attack':<20} {'AUC':>6} {'TPR@1%FPR':>10} {'(FPR)':>7} {'queries':>8} {'images':>7} {'seconds':>8}"
        "   (test halves; threshold fixed on the calibration halves)"
    )
    from diffmia.attacks.reuse import ScoredRows

    for atk in attacks:
        tuned, known = None, ScoredRows()  # the chosen candidate's calibration rows are not scored twice
        if grid:
            from diffmia.attacks.tuning import tune

            chosen, tuned = tune(loaded, atk.name, params, grid, seed, batch_size, known=known)
            typer.echo(f"{atk.name}: chosen on the calibration split: {chosen}")
            atk = build_attack(atk.name, {**params, **chosen}, seed=seed)
        result = run_attack(loaded, atk, out, batch_size=batch_size, progress=progress, tuned=tuned, known=known)
        if not result.info:  # a non-main process of a sharded run
            continue
        test = result.scores[result.scores.split == "test"]
        cal = result.scores[(result.scores.split == "calibration") & (result.scores.is_member == 0)]
        rates = rates_at(test.is_member, test.score, threshold_for_fpr(cal.score, 0.01))
        typer.echo(
            f"{atk.name:<20} {auc(test.is_member, test.score):6.3f} {rates.tpr:10.3f} {rates.fpr:7.3f}"
            f" {result.info['queries_per_sample']:8d} {result.info['generations_per_sample']:7d} {result.info['seconds']:8.1f}"
        )
    typer.echo(f"scores in {Path(out) if out else loaded.run.scores}")
    finish_processes()


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

    from diffmia.core.config import ConfigError
    from diffmia.core.io import write_json
    from diffmia.core.rundir import RunDir
    from diffmia.evaluate.audit import canary_audit
    from diffmia.evaluate.metrics import evaluate_scores
    from diffmia.evaluate.scores import ScoreFileError, read_scores
    from diffmia.evaluate.setlevel import set_level
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
        m = evaluate_scores(df.is_member, df.score, df.split, delta, (0.01, 0.001), bootstrap, seed)
        queries = (
            json.loads(path.with_suffix(".json").read_text())["queries_per_sample"]
            if path.with_suffix(".json").is_file()
            else None
        )
        m["queries_per_sample"] = queries
        if sizes:
            m["set_level"] = set_level(df.is_member, df.score, df.split, sizes, seed=seed)
        audit = canary_audit(df, delta)
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


@app.command()
@user_errors
def run(
    config: Path = typer.Argument(..., help="Benchmark config (YAML): recipes x attacks, utility, evaluation."),
    out: Optional[str] = typer.Option(None, "--out", "-o", help="Results folder (default: runs/NAME)."),
    set_: Optional[List[str]] = SetOption,
    show_examples: bool = typer.Option(
        False, "--show-examples", help="Embed the most exposed member images in the report."
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
    only: Optional[List[str]] = typer.Option(
        None,
        "--only",
        help="Run only this recipe (repeatable); results and report "
        "then cover only these. Rerun without it to collect every cached recipe.",
    ),
    executor: str = typer.Option(
        "inline",
        "--executor",
        help="inline (this process), local (one process per recipe, "
        "submitit's local executor) or slurm (one Slurm job per recipe through submitit; "
        "--slurm key=value sets its parameters).",
    ),
    slurm: Optional[List[str]] = typer.Option(
        None,
        "--slurm",
        help="submitit Slurm parameter, e.g. --slurm slurm_partition=gpu --slurm gpus_per_node=1 (repeatable).",
    ),
) -> None:
    """Train every recipe, run every attack, measure FID, and write results.csv/json, plots and report.html.

    Finished cells are cached by a hash of their config: rerun the same command to resume after a kill."""
    from diffmia.core.config import ConfigError
    from diffmia.evaluate.report import write_report
    from diffmia.matrix import load_benchmark, run_matrix

    refuse_launch(
        "run",
        "launch its stages instead (diffmia train / attack / utility), or spread the recipes with "
        "--executor local|slurm and the references with --jobs",
    )
    out = out_path(out)
    bench, recipes = load_benchmark(config, set_ or [])
    if only:
        unknown = sorted(set(only) - set(recipes))
        if unknown:
            raise ConfigError(f"--only: {config} has no recipe {', '.join(unknown)}; it has {', '.join(recipes)}")
        bench = bench.model_copy(update={"recipes": [r for r in bench.recipes if r.name in only]})
    out = out or Path("runs") / bench.name
    if executor not in ("inline", "local", "slurm"):
        raise ConfigError(f"--executor: expected inline, local or slurm, got {executor!r}")
    if executor != "inline":
        from diffmia.core.io import write_json
        from diffmia.executor import submit

        params = dotted_values(slurm)
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "benchmark.json", bench.model_dump(mode="json"))
        pending = [r.name for r in bench.recipes]
        submit(config, list(set_ or []), pending, out, executor, log=typer.echo, slurm=params)
        typer.echo("all jobs done; collecting the cached cells")
    results = run_matrix(bench, recipes, out, progress=progress, log=typer.echo)
    report = write_report(out, results, show_examples=show_examples) if show_examples else results["report"]
    typer.echo(f"results: {out / 'results.csv'}")
    typer.echo(f"report: {report}")


@app.command()
@user_errors
def audit(
    model: Path = typer.Argument(
        ...,
        help="A local diffusers pipeline folder trained elsewhere (DDPMPipeline, "
        "diffmia's text pipeline, StableDiffusionPipeline).",
    ),
    members: Path = typer.Option(
        ...,
        "--members",
        "-m",
        help="Training images: a folder (metadata.jsonl captions for "
        "text models) or a CSV with a path (and text) column.",
    ),
    nonmembers: Path = typer.Option(..., "--nonmembers", "-n", help="Images known not to be in training, same form."),
    access: str = typer.Option(
        "gray-box",
        "--access",
        help="What the attacker may use: gray-box (noise "
        "predictions), black-box (generated images only) or white-box (gradients).",
    ),
    public: Optional[Path] = typer.Option(
        None,
        "--public",
        help="Other non-member images the attacker may learn from "
        "(needed by quantile regression and SD-MIA's feature network).",
    ),
    recipe: Optional[Path] = typer.Option(
        None,
        "--recipe",
        help="The training recipe (a diffmia target YAML): the reference-model attacks (LiRA, RMIA, GSA) retrain it on subsets of the audited images.",
    ),
    adapter: Optional[Path] = typer.Option(
        None, "--adapter", help="A peft LoRA adapter folder merged into MODEL's UNet."
    ),
    attack_names: Optional[List[str]] = typer.Option(None, "--attack", "-a", help="Only these attacks (repeatable)."),
    set_: Optional[List[str]] = typer.Option(
        None, "--set", "-s", help="An attack's parameter as ATTACK.KEY=VALUE, e.g. lira.references=16 (repeatable)."
    ),
    out: Optional[str] = typer.Option(None, "--out", "-o", help="Results folder (default: runs/audit-MODELNAME)."),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of the halves' hash and of the attacks' noise."),
    calibration_fraction: float = typer.Option(0.5, "--calibration-fraction", min=0.05, max=0.95),
    near_duplicates: float = typer.Option(
        0.01,
        "--near-duplicates",
        min=0.0,
        max=1.0,
        help="Refuse member/non-member "
        "pairs this close (RMS pixel difference, 0-1 scale, 16x16 thumbnails); 0: exact only.",
    ),
    batch_size: Optional[int] = typer.Option(
        None,
        "--batch-size",
        min=1,
        max=65536,
        help="Images per batch of model calls (default: 128 on CPU, 512 on a GPU).",
    ),
    bootstrap: int = typer.Option(1000, "--bootstrap", min=0, max=100000),
    allow_outside: bool = typer.Option(
        False,
        "--allow-outside-paths",
        help="Let a CSV list name files outside its own folder (absolute or ../ paths); refused by default.",
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Audit a model trained elsewhere: every attack its access level allows, on the given members and non-members;
    score files, results, exposure.csv and the report as `diffmia run` writes them. Nothing is retrained but the
    reference models of --recipe (cached, shared by every audit of the same images and recipe)."""
    from diffmia.audit import audit_model
    from diffmia.core.config import ConfigError

    refuse_launch("audit", "launch `diffmia attack` on a run folder instead, or run the audit in one process")

    out = out_path(out) or Path("runs") / f"audit-{model.resolve().name}"
    attack_params: dict[str, dict] = {}
    for key, value in dotted_values(set_).items():
        if "." not in key:
            raise ConfigError(f"--set {key}=...: name the attack, as ATTACK.KEY=VALUE (e.g. lira.references=16)")
        name, param = key.split(".", 1)
        attack_params.setdefault(name, {})[param] = value
    results = audit_model(
        model,
        members,
        nonmembers,
        out,
        access,
        public,
        recipe,
        seed,
        calibration_fraction,
        near_duplicates,
        attack_names,
        batch_size,
        bootstrap,
        progress=progress,
        log=typer.echo,
        adapter=adapter,
        attack_params=attack_params,
        allow_outside=allow_outside,
    )
    for row in results["rows"]:
        typer.echo(
            f"{row['attack']:<20} AUC {row['auc']:.3f}  TPR@1%FPR calibrated {row['tpr@1%fpr']:.3f} "
            f"(achieved FPR {row['fpr@1%fpr_achieved']:.3f})  (test halves)"
        )
    if not results["rows"]:
        typer.echo("no attack applies at this access level; see the reasons above")
    typer.echo(f"results: {out / 'results.csv'}\nexposure: {out / 'exposure.csv'}\nreport: {results['report']}")


@app.command()
@user_errors
def compare(
    results_dir: Path = typer.Argument(..., help="A folder written by `diffmia run` (holds results.json)."),
    baseline: str = typer.Option(..., "--baseline", "-b", help="The recipe every other recipe is compared with."),
    bootstrap: int = typer.Option(2000, "--bootstrap", min=100, max=100000, help="Paired bootstrap resamples."),
    seed: int = typer.Option(0, "--seed", min=0),
) -> None:
    """Paired comparison of every recipe with a baseline on the same test images: AUC and calibrated TPR@1%FPR
    differences of the strongest attacks with bootstrap intervals and p-values, the FID difference, a verdict.
    Writes compare-BASELINE.csv into the folder."""
    from diffmia.core.config import ConfigError
    from diffmia.core.io import read_json, write_text
    from diffmia.evaluate.compare import compare_recipes, comparison_lines
    from diffmia.targets.runs import RunError

    if not (results_dir / "results.json").is_file():
        raise RunError(f"{results_dir}: no results.json here; run `diffmia run CONFIG --out {results_dir}` first")
    try:
        frame = compare_recipes(results_dir, read_json(results_dir / "results.json"), baseline, bootstrap, seed)
    except (KeyError, ValueError) as exc:
        raise ConfigError(str(exc).strip("'\"")) from None
    for line in comparison_lines(frame):
        typer.echo(line)
    path = results_dir / f"compare-{baseline}.csv"
    write_text(path, frame.to_csv(index=False))
    typer.echo(f"wrote {path}")


@app.command()
@user_errors
def owner(
    model: Path = typer.Argument(..., help="A local diffusers pipeline folder (the model in question)."),
    suspect: Path = typer.Option(..., "--suspect", "-s", help="The owner's collection (folder or CSV list)."),
    reference: Path = typer.Option(
        ..., "--reference", "-r", help="Images of the same kind known NOT to be in training (folder or CSV list)."
    ),
    attack_names: Optional[List[str]] = typer.Option(None, "--attack", "-a", help="Only these attacks (repeatable)."),
    out: Optional[str] = typer.Option(None, "--out", "-o", help="Results folder (default: runs/owner-MODELNAME)."),
    permutations: int = typer.Option(10000, "--permutations", min=100, max=1000000),
    seed: int = typer.Option(0, "--seed", min=0),
    allow_outside: bool = typer.Option(
        False,
        "--allow-outside-paths",
        help="Let a CSV list name files outside its own folder (absolute or ../ paths); refused by default.",
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """The data owner's test: was the suspect collection used to train MODEL? A one-sided set-level test of
    "suspect scores higher than reference" on cross-fitted combinations of the gray-box attacks' scores."""
    from diffmia.owner import owner_test

    out = out_path(out) or Path("runs") / f"owner-{model.resolve().name}"
    r = owner_test(
        model,
        suspect,
        reference,
        out,
        seed,
        attack_names,
        permutations,
        progress=progress,
        log=typer.echo,
        allow_outside=allow_outside,
    )
    c = r["combined"]
    typer.echo(
        f"{r['suspect_images']} suspect vs {r['reference_images']} reference images, attacks: {', '.join(r['attacks'])}"
    )
    typer.echo(
        f"combined: permutation p = {c['permutation_p']:.3g}, Welch p = {c['welch_p']:.3g}, effect size d = "
        f"{c['effect_size_d']:.2f}; median p < 0.05 from {r['images_needed_median_p_0.05'] or 'more than all'} images"
    )
    typer.echo(f"verdict: {r['verdict']}")
    typer.echo(f"wrote {out / 'owner.json'} and {out / 'owner-size-curve.png'}")


@app.command()
@user_errors
def report(
    results_dir: Path = typer.Argument(..., help="A folder written by `diffmia run` (holds results.json)."),
    show_examples: bool = typer.Option(False, "--show-examples", help="Embed the most exposed member images."),
    pdf: bool = typer.Option(False, "--pdf", help="Also print report.pdf with headless Chromium."),
) -> None:
    """Rebuild report.html and report.md (and the plots) from a results folder."""
    from diffmia.core.io import read_json
    from diffmia.evaluate.report import write_report
    from diffmia.targets.runs import RunError

    if not (results_dir / "results.json").is_file():
        raise RunError(f"{results_dir}: no results.json here; run `diffmia run CONFIG --out {results_dir}` first")
    results = read_json(results_dir / "results.json")
    if results.get("rows") and any("one_run_headline" not in info for info in results["recipes"].values()):
        from diffmia.core.io import write_json
        from diffmia.evaluate.results import add_headline_audits

        add_headline_audits(results_dir, results)  # written before the headline procedure existed
        write_json(results_dir / "results.json", results)
    html_report = write_report(results_dir, results, show_examples)
    typer.echo(f"report: {html_report}")
    if pdf:
        from diffmia.evaluate.report import write_pdf

        typer.echo(f"pdf: {write_pdf(html_report)}")


@app.command()
@user_errors
def forget(
    results_dir: Path = typer.Argument(..., help="A folder written by `diffmia run` or `diffmia audit`."),
    yes: bool = typer.Option(False, "--yes", help="Remove without listing first."),
) -> None:
    """Remove the copies of member data an audit left outside its folder: the audited images cached for reference
    training and the reference models trained on them (other audits of the same images lose them too)."""
    import shutil

    from diffmia.forget import member_data_outside
    from diffmia.targets.runs import RunError

    if not (results_dir / "results.json").is_file():
        raise RunError(f"{results_dir}: no results.json here")
    paths = member_data_outside(results_dir)
    if not paths:
        typer.echo("nothing outside the folder to remove")
        return
    for path in paths:
        typer.echo(f"{'removing' if yes else 'would remove'} {path}")
        if yes:
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    if not yes:
        typer.echo("rerun with --yes to remove them")


def main() -> None:  # pragma: no cover - console entry
    app(prog_name="diffmia")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
