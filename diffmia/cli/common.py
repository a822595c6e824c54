"""What every command of the command line shares: the typer app, the global options (threads, jobs), the one error
handler (a DiffmiaError is one line on stderr and exit code 2), `--set` parsing and output-path checks."""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path
from typing import Callable, List, Optional

import typer

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
    from diffmia.core.logs import show_progress

    show_progress()  # the work's progress lines (the "diffmia" logger) on stdout
    try:  # a help request prints and exits: no torch to configure (start-up time)
        parallel.configure(threads, jobs, apply="--help" not in sys.argv[1:])
    except ValueError as exc:  # a bad DIFFMIA_THREADS / DIFFMIA_JOBS in the environment
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


SetOption = typer.Option(None, "--set", "-s", help="Override a config value, e.g. --set train.steps=500 (repeatable).")
BatchSizeOption = typer.Option(
    None, "--batch-size", min=1, max=65536, help="Images per batch of model calls (default: 128 on CPU, 512 on a GPU)."
)
AllowOutsideOption = typer.Option(
    False,
    "--allow-outside-paths",
    help="Let a CSV list name files outside its own folder (absolute or ../ paths); refused by default.",
)


def user_errors(fn: Callable) -> Callable:
    """Turn the errors a user can fix (bad config, data, manifest, run, name) into one line on stderr and exit 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
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
    from diffmia.core.config import ConfigError

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError(
            f"diffmia {command} does not run under a multi-process launcher (WORLD_SIZE="
            f"{os.environ['WORLD_SIZE']}): {instead}"
        )


def out_path(value: Optional[str], flag: str = "--out", file: bool = False) -> Optional[Path]:
    """Check an output path before any work: not empty (an unset shell variable), a folder where a folder is
    written (a file where a file is), and somewhere writable."""
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


SlurmOption = typer.Option(
    None,
    "--slurm",
    help="submitit Slurm parameter, e.g. --slurm slurm_partition=gpu --slurm gpus_per_node=1 (repeatable).",
)

FailIfOption = typer.Option(
    None,
    "--fail-if",
    help="A CI gate, e.g. 'tpr@1%fpr > 0.05', 'auc > 0.6', 'risk >= MODERATE' (repeatable): exit 3 with the verdict "
    "line when a recipe's strongest attack crosses it (its upper 95% bound by default; a rate the test split cannot "
    "resolve fails the gate).",
)
GateBoundOption = typer.Option(
    "upper", "--gate-bound", help="Which figure --fail-if compares: upper (95% bound, default), estimate or lower."
)


def parse_gates(texts, bound: str):
    """--fail-if expressions, checked before any work starts (a bad one: exit 2)."""
    from diffmia.evaluate.gate import parse_gate

    return [parse_gate(t, bound) for t in texts or []]


def apply_gates(results: dict, gates, bound: str) -> None:
    """Exit 3 with one line per failed gate; say that every gate passed otherwise."""
    if not gates:
        return
    from diffmia.evaluate.gate import check_gates, gate_cautions

    failed = check_gates(results, gates, bound)
    for line in gate_cautions(results):
        typer.echo(f"gate caution: {line}")
    for line in failed:
        typer.echo(f"gate failed: {line}")
    if failed:
        raise typer.Exit(3)
    typer.echo(f"gate passed: {'; '.join(g.describe() for g in gates)} ({bound} bounds)")
