"""Shared pieces of the benchmark scripts: open (or train) the run they measure, print a table."""

from __future__ import annotations

from pathlib import Path

from diffmia.core.config import load_config
from diffmia.targets.runs import load_run
from diffmia.targets.train import train_target

REPO = Path(__file__).resolve().parents[1]


def ensure_run(run: Path, config: Path = REPO / "configs" / "digits-ddpm.yaml"):
    """Load `run`, training it from `config` first if it is not there (resumes a half-trained one)."""
    if not (run / "summary.json").is_file():
        train_target(load_config(config), run, resume=True)
    return load_run(run)


def print_table(rows: list[dict], columns: list[str]) -> None:
    widths = {c: max(len(c), *(len(_fmt(r[c])) for r in rows)) for c in columns}
    print("| " + " | ".join(c.ljust(widths[c]) for c in columns) + " |")
    print("|" + "|".join("-" * (widths[c] + 2) for c in columns) + "|")
    for r in rows:
        print("| " + " | ".join(_fmt(r[c]).ljust(widths[c]) for c in columns) + " |")


def _fmt(v) -> str:
    return f"{v:.3f}" if isinstance(v, float) else str(v)
