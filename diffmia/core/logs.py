"""Progress lines through Python logging. Every module logs to its own child of the "diffmia" logger
(`logging.getLogger(__name__)`); nothing is shown until someone asks: the command line shows INFO lines on stdout
(`show_progress`), the Python API does for the length of a call unless `quiet=True`, and a program embedding diffmia
configures the "diffmia" logger as it likes.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from typing import Iterator

ROOT = logging.getLogger("diffmia")


class EchoHandler(logging.Handler):
    """Each record's message as one line on the stdout of the moment (so a test runner that swaps it sees it)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            print(self.format(record), file=sys.stdout, flush=True)
        except Exception:  # a closed stream must not break the work being logged
            self.handleError(record)


def show_progress(level: int = logging.INFO) -> None:
    """Show diffmia's progress lines on stdout from now on (idempotent)."""
    if not any(isinstance(h, EchoHandler) for h in ROOT.handlers):
        ROOT.addHandler(EchoHandler())
    ROOT.setLevel(level)


@contextlib.contextmanager
def progress_lines(enabled: bool = True) -> Iterator[None]:
    """Show progress lines on stdout for the duration, unless disabled or the "diffmia" logger has handlers."""
    if not enabled or ROOT.handlers:
        yield
        return
    handler, level = EchoHandler(), ROOT.level
    ROOT.addHandler(handler)
    ROOT.setLevel(logging.INFO)
    try:
        yield
    finally:
        ROOT.removeHandler(handler)
        ROOT.setLevel(level)


@contextlib.contextmanager
def captured() -> Iterator[list[str]]:
    """The messages diffmia logs at INFO and above during the block (for tests and notebooks)."""
    lines: list[str] = []

    class _Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    handler, level = _Keep(), ROOT.level
    ROOT.addHandler(handler)
    ROOT.setLevel(logging.INFO)
    try:
        yield lines
    finally:
        ROOT.removeHandler(handler)
        ROOT.setLevel(level)
