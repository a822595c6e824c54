"""The `diffmia` command line (typer), one module per command. Each command takes a YAML config (or a run directory
made from one), repeatable `--set dotted.key=value` overrides and `--out DIR`. Bad input exits with code 2 and a
one-line error. The work each command does lives in the layers below (targets, attacks, evaluate, diffmia.matrix,
diffmia.auditor); the same work from Python: diffmia.api."""

from __future__ import annotations

from diffmia.cli import (  # noqa: F401 - each module registers its command
    attack_cmd,
    audit_cmd,
    compare_cmd,
    data_cmd,
    evaluate_cmd,
    forget_cmd,
    owner_cmd,
    report_cmd,
    run_cmd,
    sample_cmd,
    train_cmd,
    utility_cmd,
)
from diffmia.cli.common import app

__all__ = ["app", "main"]


def main() -> None:  # pragma: no cover - console entry
    app(prog_name="diffmia")
