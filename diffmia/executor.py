"""The matrix as cluster jobs (the claims that let several workers share one folder: diffmia.core.claims).

- `submit(...)`: `diffmia run --executor slurm` submits one job per unfinished recipe through submitit (one process
  per job, on the job's first GPU where it has one; stages are sharded over several processes only when launched
  alone: `diffmia train / attack / utility` under torchrun or accelerate launch); `--executor local` runs them as local processes through submitit's local
  executor (what the tests use). The command waits for the jobs, then collects every cached cell into results,
  exposure and report as a plain `diffmia run` does.
"""

from __future__ import annotations

import logging
from pathlib import Path

from diffmia.core.errors import DiffmiaError
from diffmia.matrix import load_benchmark, run_matrix

logger = logging.getLogger(__name__)


class ExecutorError(DiffmiaError):
    """A Slurm or local job of a benchmark failed (its recipe's cached cells are kept)."""


def _job(config: str, overrides: list[str], recipe: str, out: str) -> str:
    """One recipe of a matrix, run by a worker (a cluster job or a local process): cells only, no report."""
    bench, recipes = load_benchmark(config, overrides)
    bench = bench.model_copy(update={"recipes": [r for r in bench.recipes if r.name == recipe]})
    run_matrix(bench, recipes, out, progress=False, write_outputs=False)
    return recipe


def submit(
    config: str | Path,
    overrides: list[str],
    recipes: list[str],
    out: str | Path,
    executor: str,
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
        logger.info(f"[{name}] submitted as job {job.job_id} ({executor}); logs in {folder}")
    done = []
    for name, job in jobs:
        try:
            done.append(job.result())
        except Exception as exc:  # submitit.core.utils.FailedJobError and friends
            raise ExecutorError(
                f"[{name}] job {job.job_id} failed: {str(exc).strip().splitlines()[-1]}; rerun the same command to "
                "resume (finished cells are cached)"
            ) from None
        logger.info(f"[{name}] job {job.job_id} done")
    return done
