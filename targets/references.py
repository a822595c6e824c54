"""Reference models: the audited recipe retrained by the same harness on other subsets of the data, for the
reference-model attacks (LiRA, RMIA, GSA). The threat model is an auditor who can rerun the training recipe.

A reference keeps everything of the recipe (model, steps, defenses, schedule) but the data it trains on and the seed:
- online: the pool is the audited members and non-members (plus canaries, when the split has them). References come
  in complementary pairs: pair k cuts the pool by a seeded permutation into halves A_k and B_k; reference 2k trains on
  A_k, 2k+1 on B_k. So every pool image is IN exactly N/2 of N references, and each reference trains on |pool|/2
  images (the target's member count when members = non-members, the default split).
- offline: each reference trains on a seeded random subset of the public split, as many images as the target's
  members; no audited image is IN any of them.

References are cached by (recipe without its seed, mode, index, subset) under CACHE/references/, so every attack and
every run that asks for the same references shares them; a killed training resumes from its last checkpoint.
Attacks ask for references by count and mode through `reference_models` and never train anything themselves.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Literal

import numpy as np

from diffmia.core import devices, parallel
from diffmia.core.config import TargetConfig, recipe_hash
from diffmia.core.errors import DiffmiaError
from diffmia.core.io import private_dir

from .manifest import Entry, SplitManifest

Mode = Literal["online", "offline"]


logger = logging.getLogger(__name__)


class ReferenceMismatch(DiffmiaError, ValueError):
    """A reference model whose architecture or noise schedule differs from the audited model's."""


def check_reference(target, expect: dict, r: int, folder) -> None:
    """A command recipe's reference must have the audited model's architecture and noise schedule."""
    from .command import differences, signature

    differ = differences(expect, signature(target))
    if differ:
        raise ReferenceMismatch(
            f"reference {r + 1} ({folder}): what the training command saved differs from the audited model: "
            f"{'; '.join(differ[:5])}. The references must be the target's recipe: the same architecture and noise "
            "schedule"
        )


@dataclass
class References:
    mode: str
    folders: list[Path]  # run directories
    members: list[np.ndarray]  # dataset indices each reference trained on
    trained_seconds: float = 0.0  # spent training in this call (0 when every reference came from the cache)
    cached: int = 0
    extra: dict = field(default_factory=dict)
    expect: dict | None = None  # command recipes: the audited model's architecture and schedule each must share

    def __len__(self) -> int:
        return len(self.folders)

    def is_in(self, ids) -> np.ndarray:
        """(N references, len(ids)) booleans: was image i in reference r's training set."""
        ids = np.asarray(ids, dtype=np.int64)
        return np.stack([np.isin(ids, m) for m in self.members])

    def target(self, r: int, device: str | None = None):
        from .kinds import load_target

        target = load_target(Path(self.folders[r]) / "target", device or "cpu")
        if self.expect is not None:
            check_reference(target, self.expect, r, self.folders[r])
        return target

    def targets(self, device: str | None = None) -> Iterator:
        for r in range(len(self.folders)):
            yield self.target(r, device)

    def info(self) -> dict:
        return {
            "mode": self.mode,
            "count": len(self),
            "trained_seconds": round(self.trained_seconds, 1),
            "cached": self.cached,
            "subset_size": int(np.median([len(m) for m in self.members])) if self.members else 0,
            "folders": [str(f) for f in self.folders],
            **self.extra,
        }


def pool_indices(manifest: SplitManifest) -> list[int]:
    """The online pool: every audited image (and every canary)."""
    return sorted([e.index for e, _ in manifest.audit_entries()] + [c["index"] for c in manifest.canaries()])


def reference_subsets(manifest: SplitManifest, count: int, mode: Mode, seed: int, subset_size: int) -> list[np.ndarray]:
    if mode == "online":
        if count % 2:
            raise ValueError(f"online references come in complementary pairs: count must be even, got {count}")
        pool = np.asarray(pool_indices(manifest))
        out = []
        for pair in range(count // 2):
            order = pool[np.random.default_rng([seed, 101, pair]).permutation(len(pool))]
            half = len(pool) // 2
            out += [np.sort(order[:half]), np.sort(order[half:])]
        return out
    public = np.asarray(manifest.indices("public"))
    if subset_size > len(public):
        raise ValueError(
            f"offline references train on {subset_size} public images each, but the split has only "
            f"{len(public)} public images"
        )
    return [
        np.sort(public[np.random.default_rng([seed, 103, r]).permutation(len(public))[:subset_size]])
        for r in range(count)
    ]


def reference_split(manifest: SplitManifest, subset: np.ndarray) -> SplitManifest:
    """A manifest whose members are `subset`; the rest of the pool are its non-members; public minus the subset stays
    public (the recipe's public base, if any, is trained on it)."""
    by_index: dict[int, Entry] = {
        e.index: e for role in ("members", "nonmembers", "public") for e in getattr(manifest, role)
    }
    by_index.update({e.index: e for e, _ in manifest.canary_entries()})
    chosen = set(int(i) for i in subset)
    pool = set(pool_indices(manifest)) | chosen
    halves = ("calibration", "test")

    def entries(idx) -> list[Entry]:
        return [Entry(i, by_index[i].source, by_index[i].sha256, halves[k % 2]) for k, i in enumerate(sorted(idx))]

    return SplitManifest(
        dataset=dict(manifest.dataset),
        seed=manifest.seed,
        members=entries(chosen),
        nonmembers=entries(pool - chosen),
        public=[e for e in manifest.public if e.index not in chosen],
        extra={"reference_of": manifest.dataset.get("name"), "subset_size": len(chosen)},
    )


def reference_models(
    loaded, count: int, mode: Mode, cache_dir: str | Path | None = None, seed: int = 0, progress: bool = False
) -> References:
    """The `count` references of `loaded`'s recipe in `mode`, trained now where the cache lacks them."""
    from diffmia.core.rundir import default_cache_dir

    cfg: TargetConfig = loaded.config
    manifest: SplitManifest = loaded.manifest
    subset_size = len(manifest.members)
    subsets = reference_subsets(manifest, count, mode, seed, subset_size)
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    # helpers the recipe's defenses cache (a public base) come from where the target's came from: trained once
    public_base = (manifest.extra.get("public_base") or {}).get("folder")
    helpers = Path(public_base).parent if public_base and Path(public_base).is_dir() else root
    recipe = recipe_hash(cfg.model_copy(update={"seed": 0}))
    expect = None
    if cfg.command is not None:  # the team's command: keyed by its variables' values too, checked against the target
        from .command import command_key, signature

        recipe = f"{recipe}-{command_key(cfg)}"
        expect = signature(loaded.target)
    private_dir(root / "references")  # models trained on members: only their owner may read them
    folders, missing, cached = [], [], 0
    for r, subset in enumerate(subsets):
        digest = hashlib.sha256(np.asarray(subset, dtype=np.int64).tobytes()).hexdigest()[:12]
        folder = root / "references" / f"{cfg.name}-{recipe}-{mode}-{seed}-{r}-{digest}"
        if _complete(folder):
            cached += 1
        else:
            ref_cfg = cfg.model_copy(
                update={
                    "seed": int(
                        np.random.SeedSequence([seed, 107, r, 1 if mode == "online" else 2]).generate_state(1)[0]
                        % 2**31
                    )
                }
            )
            missing.append((r, ref_cfg, folder, reference_split(manifest, subset)))
        folders.append(folder)
    t0 = time.time()
    # the recipe's helper (a public base) is missing: in parallel, the first reference trains it alone, the rest share it
    base_missing = bool(public_base) and not Path(public_base).is_dir()
    world, rank = parallel.processes()
    if world > 1 and missing:  # under torchrun / accelerate launch: the references are spread over the processes
        _train_launched(missing, count, mode, helpers, base_missing, world, rank)
        spent = time.time() - t0
        return References(mode, folders, subsets, spent, cached, {"processes": world}, expect)
    if expect is not None and missing:  # a command's first reference is checked before the others train (GPU hours)
        from .kinds import load_target

        _train_one(missing[0], count, mode, helpers, progress)
        check_reference(load_target(missing[0][2] / "target"), expect, missing[0][0], missing[0][2])
        missing = missing[1:]
    executor = os.environ.get(EXECUTOR_ENV)
    if executor and missing:  # one submitit job per reference (a Slurm job array), after a missing public base
        if base_missing:
            _train_one(missing[0], count, mode, helpers, progress)
            missing = missing[1:]
        _train_submitit(missing, count, mode, helpers, executor, json.loads(os.environ.get(SLURM_ENV) or "{}"))
        spent = time.time() - t0
        return References(mode, folders, subsets, spent, cached, {"executor": executor}, expect)
    workers = min(parallel.jobs(), len(missing))
    if workers > 1 and base_missing:
        _train_one(missing[0], count, mode, helpers, progress)
        missing = missing[1:]
    if workers > 1 and len(missing) > 1:
        _train_parallel(missing, count, mode, helpers, workers)
    else:
        if (
            len(missing) > 1
            and parallel.threads() >= 2
            and not os.environ.get(parallel.JOBS_ENV)
            and devices.kind(None) == "cpu"
        ):
            logger.info(
                f"references: {len(missing)} to train one at a time; `diffmia --jobs 2 ...` trains two at once "
                "(1.5x faster for the digits target on 2 CPU cores: benchmarks/reference_jobs.py)"
            )
        for job in missing:
            _train_one(job, count, mode, helpers, progress)
    spent = time.time() - t0 if missing else 0.0
    return References(mode, folders, subsets, spent, cached, {"jobs": max(1, workers)} if workers > 1 else {}, expect)


EXECUTOR_ENV, SLURM_ENV = parallel.EXECUTOR_ENV, parallel.SLURM_ENV


class ReferenceJobFailed(DiffmiaError, RuntimeError):
    """A reference trained as a submitit job failed; its log is named, finished references stay cached."""


def _train_submitit(missing: list, count: int, mode: str, helpers: Path, executor: str, params: dict) -> None:
    """The missing references as one job array (submitit's `map_array`: a Slurm job array, or local processes),
    each job training one reference as `_train_one` does; waits for all, naming the first failure's log."""
    import submitit

    folder = helpers / "reference-jobs"
    if executor == "slurm":
        ex = submitit.AutoExecutor(folder=folder, cluster="slurm")
        ex.update_parameters(**params)
    elif executor == "local":
        ex = submitit.LocalExecutor(folder=folder)
        ex.update_parameters(timeout_min=24 * 60, **params)
    else:
        raise ValueError(f"reference executor must be local or slurm, got {executor!r}")
    jobs = ex.map_array(_train_in_job, missing, [helpers] * len(missing))
    logger.info(
        f"references: {len(jobs)} submitted as {executor} jobs ({jobs[0].job_id.split('_')[0]}); logs in {folder}"
    )
    for job, (r, _, ref_folder, split) in zip(jobs, missing):
        try:
            job.result()
        except Exception as exc:  # submitit's FailedJobError and friends
            last = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
            raise ReferenceJobFailed(
                f"reference {r + 1}/{count} ({ref_folder}): job {job.job_id} failed: {last}; its log: "
                f"{job.paths.stderr}; rerun to resume (finished references are cached)"
            ) from None
        logger.info(f"reference {r + 1}/{count} ({mode}, {len(split.members)} images) done in job {job.job_id}")


def _train_in_job(job, helpers: Path) -> str:
    os.environ.pop(EXECUTOR_ENV, None)  # a job trains its one reference itself
    _train_one(job, 0, "", helpers, False)
    return str(job[2])


def _train_one(job, count: int, mode: str, helpers: Path, progress: bool) -> None:
    from .train import train_target

    r, ref_cfg, folder, split = job
    logger.info(f"reference {r + 1}/{count} ({mode}, {len(split.members)} images) -> {folder}")
    train_target(ref_cfg, folder, resume=True, progress=progress, cache_dir=helpers, split=split)


def _complete(folder: Path) -> bool:
    from diffmia.core.rundir import RunDir

    return RunDir(folder).is_trained()


# what torchrun / accelerate launch set to join a process group: a reference trained under a launch must not see them
LAUNCH_ENV = (
    "WORLD_SIZE",
    "RANK",
    "LOCAL_RANK",
    "LOCAL_WORLD_SIZE",
    "GROUP_RANK",
    "GROUP_WORLD_SIZE",
    "ROLE_RANK",
    "ROLE_WORLD_SIZE",
    "ROLE_NAME",
    "MASTER_ADDR",
    "MASTER_PORT",
    "TORCHELASTIC_RUN_ID",
    "TORCHELASTIC_RESTART_COUNT",
    "TORCHELASTIC_MAX_RESTARTS",
    "TORCHELASTIC_USE_AGENT_STORE",
)


def _one_process(gpu: str | None) -> None:
    """Initializer of a child that trains references for one process of a launch: a plain one-process training (no
    process group), on that process's GPU when there is one."""
    import os

    for name in LAUNCH_ENV:
        os.environ.pop(name, None)
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu


def _launched_gpu() -> str | None:
    """The GPU of this launched process (its LOCAL_RANK-th visible device), or None on CPU."""
    import os

    import torch

    if not torch.cuda.is_available():
        return None
    local = int(os.environ.get("LOCAL_RANK", "0"))
    visible = [d for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    return visible[local % len(visible)] if visible else str(local % torch.cuda.device_count())


def _train_launched(
    missing: list,
    count: int,
    mode: str,
    helpers: Path,
    base_missing: bool,
    world: int,
    rank: int,
    poll: float = 2.0,
) -> None:
    """Reference training under torchrun / accelerate launch: references are independent jobs, so process r trains
    every world-th missing one (after the first, alone on process 0, when the recipe's public base must be trained
    first), each in a spawned child that sees no process group (one-process training, on this process's GPU, with
    this process's thread count), then waits until every reference is on disk. A failed child fails its process and
    the launcher stops the others; a rerun resumes every reference from its checkpoint."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    import torch

    def train(jobs: list) -> None:
        if not jobs:
            return
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(1, mp_context=ctx, initializer=_one_process, initargs=(_launched_gpu(),)) as pool:
            for job in jobs:
                if rank == 0:
                    logger.info(f"reference {job[0] + 1}/{count} ({mode}, {len(job[3].members)} images) -> {job[2]}")
                pool.submit(_train_in_worker, job, helpers, torch.get_num_threads()).result()

    def wait(jobs: list) -> None:
        waiting = [job[2] for job in jobs if not _complete(job[2])]
        if waiting and rank == 0:
            logger.info(f"references: waiting for {len(waiting)} trained by other processes")
        while waiting:
            time.sleep(poll)
            waiting = [f for f in waiting if not _complete(f)]

    if rank == 0:
        logger.info(f"references: {len(missing)} to train, spread over {world} processes")
    if base_missing:  # the first reference trains the recipe's public base; the others then share it
        train(missing[:1] if rank == 0 else [])
        wait(missing[:1])
        missing = missing[1:]
    train(missing[rank::world])
    wait(missing)


def _train_in_worker(job, helpers: Path, threads: int) -> str:
    from diffmia.core.parallel import set_threads

    set_threads(threads)
    _train_one(job, 0, "", helpers, False)
    return str(job[2])


def _train_parallel(missing: list, count: int, mode: str, helpers: Path, workers: int) -> None:
    """Independent references in `workers` processes (spawned: no torch state is forked), each with its share of the
    CPUs. A worker that dies loses only its own reference, which resumes from its checkpoint on the next call."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    threads = parallel.worker_threads(workers)
    logger.info(f"references: {len(missing)} to train in {workers} processes x {threads} threads")
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(_train_in_worker, job, helpers, threads): job for job in missing}
        for done, future in enumerate(as_completed(futures), 1):
            r, _, folder, split = futures[future]
            future.result()  # re-raises a worker's error here
            logger.info(
                f"reference {r + 1}/{count} ({mode}, {len(split.members)} images) done [{done}/{len(missing)}] -> {folder}"
            )
