"""CPU threads and parallel jobs on one machine.

- `usable_cpus()`: the CPUs this process may really use: its affinity mask, capped by a cgroup CPU quota (a container
  limited to 2 CPUs on a 64-core host reports 64 to os.cpu_count(); torch would start 64 threads).
- `set_threads(n)`: torch's intra-op threads (default: the usable CPUs). On a machine busy with other work, fewer
  threads than cores is faster (measured on the 2-core CI machine: see the README).
- `jobs()`: how many independent trainings (reference models) may run at once, each in its own process with
  usable_cpus() // jobs threads. Set by `diffmia --jobs N` or DIFFMIA_JOBS; default 1 (one process, all threads).
  Measured here: two 1-thread trainings at once finish in 28 s what one 2-thread training does in 22.5 s each.
- `reference_jobs(executor, slurm)`: while it is open, every missing reference model is one submitit job (a Slurm
  job array, or local processes) instead of a training in this process (`diffmia audit --reference-executor`).
- `processes()`: (processes, this one's index) under torchrun / `accelerate launch`, else (1, 0); `finish_processes()`
  ends such a launch cleanly.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

JOBS_ENV = "DIFFMIA_JOBS"
THREADS_ENV = "DIFFMIA_THREADS"
EXECUTOR_ENV = "DIFFMIA_REFERENCE_EXECUTOR"  # local | slurm: each missing reference one submitit job
SLURM_ENV = "DIFFMIA_REFERENCE_SLURM"  # JSON of submitit's Slurm parameters


@contextlib.contextmanager
def reference_jobs(executor: str | None, slurm: dict | None = None):
    """References trained as submitit jobs while open (None: unchanged); the environment is restored on exit."""
    if executor is None:
        yield
        return
    if executor not in ("local", "slurm"):
        from diffmia.core.config import ConfigError

        raise ConfigError(f"--reference-executor: expected local or slurm, got {executor!r}")
    saved = {k: os.environ.get(k) for k in (EXECUTOR_ENV, SLURM_ENV)}
    os.environ[EXECUTOR_ENV], os.environ[SLURM_ENV] = executor, json.dumps(slurm or {})
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _cgroup_quota() -> float | None:
    """CPUs allowed by the cgroup (v2 cpu.max, else v1 cfs quota), or None when unlimited / unknown."""
    try:
        text = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if text and text[0] != "max":
            return int(text[0]) / int(text[1])
    except (OSError, ValueError, IndexError):
        pass
    try:
        quota = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
        period = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
        if quota > 0 and period > 0:
            return quota / period
    except (OSError, ValueError):
        pass
    return None


def usable_cpus() -> int:
    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        count = os.cpu_count() or 1
    quota = _cgroup_quota()
    if quota is not None:
        count = min(count, max(1, int(quota)))
    return max(1, count)


def _positive(name: str, value) -> int:
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a positive integer, got {value!r}") from None
    if n < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return n


def threads() -> int:
    value = os.environ.get(THREADS_ENV)
    return _positive(THREADS_ENV, value) if value else usable_cpus()


def jobs() -> int:
    value = os.environ.get(JOBS_ENV)
    return _positive(JOBS_ENV, value) if value else 1


def configure(threads_: int | None = None, jobs_: int | None = None, apply: bool = True) -> None:
    """Record the choices in the environment (so worker processes inherit them) and apply the thread count to torch
    (unless `apply` is False: nothing imports torch then)."""
    if threads_ is not None:
        os.environ[THREADS_ENV] = str(_positive("--threads", threads_))
    if jobs_ is not None:
        os.environ[JOBS_ENV] = str(_positive("--jobs", jobs_))
    jobs()  # a bad value in the environment is refused here, before any work
    if apply:
        set_threads()
    else:
        threads()  # validated all the same


def set_threads(n: int | None = None) -> int:
    import torch

    n = n or threads()
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


def worker_threads(workers: int) -> int:
    """Threads for each of `workers` processes sharing this process's CPUs."""
    return max(1, threads() // max(1, workers))


def processes() -> tuple[int, int]:
    """(processes, this one's index) when launched by torchrun / `accelerate launch` with several processes, else
    (1, 0)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 1, 0
    import torch
    from accelerate import PartialState

    state = PartialState(cpu=not torch.cuda.is_available())  # on CPU: gloo
    return state.num_processes, state.process_index


def finish_processes() -> None:
    """End a launched run cleanly: wait for every process, then tear the process group down before the interpreter
    exits. Without it a non-main process that finishes first can leave while the main one still writes, and gloo's
    teardown at exit may abort it (SIGABRT, seen once in CI), failing the whole launch."""
    if processes()[0] <= 1:
        return
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
