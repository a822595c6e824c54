"""Several workers on one results folder, and the matrix as cluster jobs.

- `claim(path)`: an atomic claim on a recipe of a matrix (O_CREAT|O_EXCL), kept alive by a heartbeat thread that
  touches it; a claim whose heartbeat stopped for `ttl` seconds (a dead worker), or whose process is gone on this
  host, expires and may be taken over. So two `diffmia run` on one folder never compute the same recipe; every cell
  file is written atomically and checked when read, so a killed worker's partial cell is never read.
- `submit(...)`: `diffmia run --executor slurm` submits one job per unfinished recipe through submitit (one process
  per job, on the job's first GPU where it has one; stages are sharded over several processes only when launched
  alone: `diffmia train / attack / utility` under torchrun or accelerate launch); `--executor local` runs them as local processes through submitit's local
  executor (what the tests use). The command waits for the jobs, then collects every cached cell into results,
  exposure and report as a plain `diffmia run` does.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from pathlib import Path
from typing import Iterator

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


def wait_for_claim(path: Path, ttl: float = TTL, log=print, poll: float = 2.0) -> None:
    said = False
    while path.exists() and not is_stale(path, ttl):
        if not said:
            log(f"waiting for the worker holding {path}")
            said = True
        time.sleep(poll)


def _job(config: str, overrides: list[str], recipe: str, out: str) -> str:
    """One recipe of a matrix, run by a worker (a cluster job or a local process): cells only, no report."""
    from diffmia.matrix import load_benchmark, run_matrix

    bench, recipes = load_benchmark(config, overrides)
    bench = bench.model_copy(update={"recipes": [r for r in bench.recipes if r.name == recipe]})
    run_matrix(bench, recipes, out, progress=False, log=lambda *_: None, write_outputs=False)
    return recipe


def submit(
    config: str | Path,
    overrides: list[str],
    recipes: list[str],
    out: str | Path,
    executor: str,
    log=print,
    slurm: dict | None = None,
) -> list[str]:
    """One job per recipe through submitit; waits for all, re-raising the first failure with its recipe named."""
    import submitit

    folder = Path(out) / "jobs"
    if executor == "slurm":
        ex = submitit.AutoExecutor(folder=folder, cluster="slurm")
        ex.update_parameters(**(slurm or {}))
    elif executor == "local":
        ex = submitit.LocalExecutor(folder=folder)
        ex.update_parameters(timeout_min=24 * 60)
    else:
        raise ValueError(f"executor must be local or slurm, got {executor!r}")
    jobs = [(name, ex.submit(_job, str(config), list(overrides), name, str(out))) for name in recipes]
    for name, job in jobs:
        log(f"[{name}] submitted as job {job.job_id} ({executor}); logs in {folder}")
    done = []
    for name, job in jobs:
        try:
            done.append(job.result())
        except Exception as exc:  # submitit.core.utils.FailedJobError and friends
            raise RuntimeError(f"[{name}] job {job.job_id} failed: {str(exc).strip().splitlines()[-1]}") from None
        log(f"[{name}] job {job.job_id} done")
    return done
