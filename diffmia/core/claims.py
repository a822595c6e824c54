"""Claims on a shared results folder: several workers, each recipe computed once.

`claim(path)`: an atomic claim on a recipe of a matrix (or a shared public base: O_CREAT|O_EXCL), kept alive by a
heartbeat thread that touches it; a claim whose heartbeat stopped for `ttl` seconds (a dead worker), or whose process
is gone on this host, expires and may be taken over. So two `diffmia run` on one folder never compute the same
recipe; every cell file is written atomically and checked when read, so a killed worker's partial cell is never read.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
from pathlib import Path
from typing import Iterator

logger = logging.getLogger(__name__)

TTL = 600.0  # seconds without a heartbeat after which a claim is a dead worker's
HEARTBEAT = 30.0


def _alive(record: dict) -> bool:
    if record.get("host") != socket.gethostname():
        return True  # cannot tell from here: the heartbeat decides
    try:
        os.kill(int(record["pid"]), 0)
        return True
    except ProcessLookupError:
        return False
    except (PermissionError, KeyError, ValueError, TypeError):
        return True


def is_stale(path: Path, ttl: float = TTL) -> bool:
    try:
        age = time.time() - path.stat().st_mtime
        record = json.loads(path.read_text() or "{}")
    except FileNotFoundError:
        return False
    except ValueError:  # being written this instant
        return False
    return age > ttl or not _alive(record)


def _take(path: Path) -> bool:
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        json.dump({"host": socket.gethostname(), "pid": os.getpid(), "since": time.time()}, f)
    return True


@contextlib.contextmanager
def claim(path: str | Path, ttl: float = TTL, heartbeat: float = HEARTBEAT, wait: bool = False) -> Iterator[bool]:
    """Yield True while this process holds the claim, False if a live worker holds it (or wait for it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    while not _take(path):
        if is_stale(path, ttl):  # a dead worker's: move it aside (only one taker wins the rename), then retry
            aside = path.with_name(f"{path.name}.expired.{os.getpid()}")
            try:
                os.rename(path, aside)
                aside.unlink()
            except FileNotFoundError:
                pass
            continue
        if not wait:
            yield False
            return
        time.sleep(min(2.0, heartbeat))
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(heartbeat):
            with contextlib.suppress(FileNotFoundError):
                os.utime(path)

    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        yield True
    finally:
        stop.set()
        thread.join()
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def wait_for_claim(path: Path, ttl: float = TTL, poll: float = 2.0) -> None:
    said = False
    while path.exists() and not is_stale(path, ttl):
        if not said:
            logger.info(f"waiting for the worker holding {path}")
            said = True
        time.sleep(poll)
