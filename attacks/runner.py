"""Score a trained run's members and non-members with one attack, streaming scores to scores/NAME.csv.

The CSV has one row per audited image (sample_id, source, split, is_member, score), and one per canary of a one-run
audit (split "canary", is_member = its coin flip; metrics read only the calibration and test rows) and is written batch by batch to a
temporary file that is renamed into place only when complete; each finished batch is also kept in a journal
(attacks/journal.py), from which a killed run resumes, bit-identical. A sidecar scores/NAME.json records the attack's
parameters, seed, declared and counted queries per sample, and seconds.
"""

from __future__ import annotations

import csv
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from tqdm.auto import tqdm

from diffmia.core import parallel
from diffmia.core.config import ConfigError
from diffmia.core.devices import resolve_batch_size
from diffmia.core.io import atomic_path, spreadsheet_safe, write_json
from diffmia.targets.runs import LoadedRun

from .base import Attack, batch_of
from .journal import Journal, journal_key
from .reuse import ScoredRows, in_order, split

logger = logging.getLogger(__name__)

COLUMNS = ["sample_id", "source", "split", "is_member", "score"]


class QueryCountMismatch(AssertionError):
    """An attack made a different number of model calls than it declares: a bug in the attack."""


@dataclass
class AttackResult:
    scores: pd.DataFrame
    info: dict
    csv_path: Path


def score_batches(loaded: LoadedRun, attack: Attack, entries, batch_size: int = 128, progress: bool = True):
    """Score `entries` batch by batch, checking the counted queries and generated images against the attack's
    declaration; yields one list of CSV rows (COLUMNS + the attack's components) per batch. prepare() is the caller's."""
    target = loaded.target
    declared = attack.queries_per_sample(target)
    generations = attack.generations_per_sample(target)
    bar = tqdm(total=len(entries), desc=attack.name, unit="img", disable=not progress)
    fits = batch_size  # the largest batch the device has held; halved on an out-of-memory error
    for start in range(0, len(entries), batch_size):
        chunk = entries[start : start + batch_size]
        rows: list[list] = []
        pos = 0
        while pos < len(chunk):  # the batch in pieces of `fits` images, the same rows whatever the pieces
            piece = chunk[pos : pos + fits]
            try:
                rows += _score_piece(loaded, attack, piece, declared, generations)
            except torch.OutOfMemoryError:
                if fits == 1:
                    raise
                fits = max(1, fits // 2)
                logger.warning(
                    f"{attack.name}: out of memory with {len(piece)} images at once on {target.device}; "
                    f"halved to {fits} and retried"
                )
                if target.device.type == "cuda":
                    torch.cuda.empty_cache()
                continue
            pos += len(piece)
        yield rows
        bar.update(len(chunk))
    bar.close()


def _score_piece(loaded: LoadedRun, attack: Attack, chunk, declared: int, generations: int) -> list[list]:
    """CSV rows of one batch, after checking the queries and generations it made against the declaration."""
    target = loaded.target
    ids = [e.index for e, _ in chunk]
    batch = batch_of(loaded, ids).to(target.device)  # the attack runs on the device; its scores come back
    before = (target.queries.sample_queries, target.queries.generations)
    dropped_before = set(attack.dropped_ids())
    scores = attack.score(target, batch)
    dropped = set(attack.dropped_ids()) - dropped_before
    scored = len(ids) - len(dropped)
    after = (target.queries.sample_queries, target.queries.generations)
    for what, per_image, b, a in zip(("queries", "generations"), (declared, generations), before, after):
        if a - b != per_image * scored:
            raise QueryCountMismatch(
                f"{attack.name}: declared {per_image} {what} per image, made {(a - b) / max(scored, 1):g}"
            )
    parts = [scores[c].detach().cpu().tolist() for c in attack.components] if attack.components else []
    main = [float("nan")] * len(ids) if attack.components else scores.detach().cpu().tolist()
    rows = []
    for row, ((entry, is_member), s) in enumerate(zip(chunk, main)):
        if entry.index in dropped:  # listed in the JSON, never scored
            continue
        rows.append(
            [
                entry.index,
                spreadsheet_safe(entry.source),
                entry.half,
                int(is_member),
                float(s),
                *(float(p[row]) for p in parts),
            ]
        )
    return rows


def timesteps_beyond(attack: Attack, limit: int) -> list[int]:
    """The fixed timesteps of `attack` that a schedule of `limit` diffusion steps (0..limit-1) does not have."""
    return [t for t in attack.timesteps_used() if t >= limit]


def probe_batch_size(target, probe: int = 2) -> int | None:
    """On a GPU: the attack batch size from the memory free and the peak memory of one model call on `probe` images
    (diffmia.core.devices.memory_batch_size); None (the defaults) where the target has no noise prediction to probe.
    The probe's queries are not counted (the runner resets the counters before scoring)."""
    from diffmia.core.devices import memory_batch_size

    if getattr(target, "flow_matching", False):  # no noise prediction to probe (targets/flow.py)
        return None
    device = target.device
    captions = [""] * probe if target.conditional else None
    x = torch.zeros((probe, *target.sample_shape))
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    target.predict_noise(x, target.num_train_timesteps // 2, captions)
    torch.cuda.synchronize(device)
    per_image = (torch.cuda.max_memory_allocated(device) - before) / probe
    free, _ = torch.cuda.mem_get_info(device)
    size = memory_batch_size(per_image, free)
    logger.info(
        f"batch size {size} from the GPU's memory: {per_image / 2**20:.1f} MiB per image in one model call, "
        f"{free / 2**30:.1f} GiB free (set --batch-size to choose)"
    )
    return size


def check_attack_fits(loaded: LoadedRun, attack: Attack) -> None:
    if attack.needs_captions and not loaded.target.conditional:
        raise ConfigError(f"attack {attack.name} needs a text-conditioned target; {loaded.run.root} is unconditional")
    limit = loaded.target.num_train_timesteps
    beyond = timesteps_beyond(attack, limit)
    if beyond:
        raise ConfigError(
            f"attack {attack.name}: timestep {max(beyond)} is beyond {loaded.run.root}'s schedule of "
            f"{limit} diffusion steps (0..{limit - 1}); give one below {limit}, e.g. --set timestep="
            f"{max(1, limit // 10)}"
        )


def run_attack(
    loaded: LoadedRun,
    attack: Attack,
    out_dir: str | Path | None = None,
    batch_size: int | None = None,
    progress: bool = True,
    tuned: dict | None = None,
    known: ScoredRows | None = None,
) -> AttackResult:
    """Score every audited image (and canary) of `loaded` with `attack`. Rows `known` already holds for this attack
    (the chosen candidate's calibration rows from tuning, a cell scored before) are written, not computed again; the
    rows computed here are added to it. `batch_size` None: the device's default (diffmia.core.devices)."""
    out_dir = Path(out_dir) if out_dir is not None else loaded.run.scores
    if batch_size is None and loaded.target.device.type == "cuda":
        batch_size = probe_batch_size(loaded.target)
    batch_size = resolve_batch_size(batch_size, "attack", loaded.target.device, loaded.target.image_shape)
    csv_path = out_dir / f"{attack.name}.csv"
    entries = loaded.manifest.audit_entries() + loaded.manifest.canary_entries()  # canaries: split "canary"
    target = loaded.target
    declared = attack.queries_per_sample(target)
    generations = attack.generations_per_sample(target)
    check_attack_fits(loaded, attack)
    for stale in out_dir.glob(f".{attack.name}.*.tmp") if out_dir.is_dir() else []:  # a killed earlier write
        stale.unlink(missing_ok=True)
    t_prepare = time.time()
    attack.prepare(loaded, loaded.run.root / ".cache")  # e.g. the feature network trained on the public split
    prepare_seconds = time.time() - t_prepare
    columns = COLUMNS + list(attack.components)
    target.queries.reset()
    t0 = time.time()
    reused, todo = split(known, attack, entries)
    world, rank = parallel.processes()
    if world > 1:  # under `accelerate launch`: this process scores every world-th batch, the main one writes
        batches = [todo[i : i + batch_size] for i in range(0, len(todo), batch_size)]
        mine = [b for i, b in enumerate(batches) if i % world == rank]
        local = list(score_batches(loaded, attack, [e for b in mine for e in b], batch_size, progress and rank == 0))
        from accelerate.utils import gather_object

        gathered = gather_object([(rank, local, sorted(attack.dropped_ids()), target.queries.forward_passes)])
        ordered: dict[int, list] = {}
        for r, rows_of_r, dropped_of_r, _ in gathered:
            for k, rows in enumerate(rows_of_r):
                ordered[r + k * world] = rows
            attack.record_dropped(dropped_of_r)
        target.queries.forward_passes = sum(g[3] for g in gathered)
        all_rows = [ordered[i] for i in sorted(ordered)]
        resumed = {}
    else:  # one process: every finished batch goes to the journal, and a killed run resumes from it
        journal = Journal(out_dir, attack.name, journal_key(attack, todo, batch_size, target))
        resumed, dropped_before = journal.load()
        if resumed or dropped_before:
            attack.record_dropped(dropped_before)
            logger.info(
                f"{attack.name}: resuming a killed run: {len(resumed)} scored rows reused from {journal.path.name}"
                + (f" ({len(dropped_before)} images it dropped)" if dropped_before else "")
            )
        skip = set(resumed) | set(dropped_before)
        rest = [pair for pair in todo if pair[0].index not in skip]
        journal.open(resumed=journal.path.is_file())
        all_rows = _journaled(journal, attack, score_batches(loaded, attack, rest, batch_size, progress))
        if resumed:
            reused = {**reused, **resumed}
    if known is not None:  # every process keeps the same store: the next call shards the same remaining rows
        all_rows = list(all_rows)
        known.add(attack, columns, (r for rows in all_rows for r in rows))
        known.add(attack, columns, resumed.values())
    if reused:
        all_rows = [in_order(entries, reused, (r for rows in all_rows for r in rows))]
    if world > 1 and rank != 0:  # only the main process writes; the others return what was gathered
        return AttackResult(pd.DataFrame([r for rows in all_rows for r in rows], columns=columns), {}, csv_path)
    # owner-only: one row per member with its file name and score
    with atomic_path(csv_path, private=True) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for rows in all_rows:
            writer.writerows([*r[:4], *(repr(v) for v in r[4:])] for r in rows)
            f.flush()
        f.close()
        if attack.components:  # the final score needs every image (fits on the calibration rows)
            frame = pd.read_csv(tmp)
            frame["score"] = attack.combine(frame)
            frame.to_csv(tmp, index=False, float_format="%.17g")
    seconds = time.time() - t0
    from diffmia.core.environment import environment

    info = {
        "environment": environment(),
        "attack": attack.name,
        "access": attack.access,
        "paper": attack.paper,
        "params": attack.params.model_dump(mode="json"),
        "seed": attack.seed,
        "queries_per_sample": declared,
        "generations_per_sample": generations,
        "forward_passes": target.queries.forward_passes,
        "samples": len(entries) - len(attack.dropped_ids()),
        "reused_rows": len(entries) - len(todo),
        "resumed_rows": len(resumed),
        "dropped": {"count": len(attack.dropped_ids()), "ids": sorted(attack.dropped_ids())},
        "seconds": round(seconds, 3),
        "prepare_seconds": round(prepare_seconds, 3),
        "seconds_per_sample": round(seconds / max(len(entries), 1), 6),
        "processes": world,
        "precision": {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[target.autocast_dtype],
        "run": str(loaded.run.root),
        **attack.extra_info(),
        **({"tuned": tuned} if tuned else {}),
    }
    write_json(out_dir / f"{attack.name}.json", info)
    if world == 1:
        journal.close(done=True)  # the score file is complete: nothing to resume
    return AttackResult(pd.read_csv(csv_path), info, csv_path)


def _journaled(journal: Journal, attack: Attack, batches):
    """The batches of score_batches, each written to the journal (with the images it dropped) before it is used."""
    dropped = set(attack.dropped_ids())
    try:
        for rows in batches:
            now = set(attack.dropped_ids())
            journal.append(rows, sorted(now - dropped))
            dropped = now
            yield rows
    finally:
        journal.close(done=False)
