"""Reading a score file (scores/NAME.csv + NAME.json) with every check a metric relies on.

A score file is refused by name when it cannot be parsed, lacks a column, has no member or no non-member in a half,
holds a non-finite score, or (given the run's manifest) does not score every audited member and non-member exactly
once: a file cut short by a few rows is never evaluated on what is left. Images the attack dropped (listed in the
JSON sidecar, e.g. SD-MIA's unrewritable captions) are the one allowed absence.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from diffmia.core.errors import DiffmiaError

COLUMNS = ("sample_id", "split", "is_member", "score")


class ScoreFileError(DiffmiaError, ValueError):
    """A score file that cannot be evaluated as it stands."""


def read_scores(path: str | Path, manifest=None) -> pd.DataFrame:
    path = Path(path)
    try:
        df = pd.read_csv(path)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise ScoreFileError(f"{path}: not a readable score CSV ({str(exc).splitlines()[0]})") from None
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise ScoreFileError(f"{path}: lacks column(s) {', '.join(missing)} (a score file has {', '.join(COLUMNS)})")
    if df.empty:
        raise ScoreFileError(f"{path}: holds no scores")
    score = pd.to_numeric(df.score, errors="coerce")
    if not np.isfinite(score.to_numpy(dtype=float)).all():
        bad = df.sample_id[~np.isfinite(score.to_numpy(dtype=float))].tolist()[:5]
        raise ScoreFileError(f"{path}: non-numeric or non-finite score for sample(s) {bad}")
    if not set(pd.unique(df.is_member)) <= {0, 1}:
        raise ScoreFileError(f"{path}: is_member must be 0 or 1")
    df = df.assign(score=score.astype(float))
    for half in ("calibration", "test"):
        part = df[df.split == half]
        for flag, role in ((1, "member"), (0, "non-member")):
            if not (part.is_member == flag).any():
                raise ScoreFileError(f"{path}: no {role} in the {half} half; metrics need both classes in both halves")
    if manifest is not None:
        check_against_manifest(df, path, manifest)
    return df


def dropped_ids(path: Path) -> set[int]:
    sidecar = path.with_suffix(".json")
    if not sidecar.is_file():
        return set()
    try:
        return set((json.loads(sidecar.read_text()).get("dropped") or {}).get("ids") or [])
    except ValueError:
        raise ScoreFileError(f"{sidecar}: not valid JSON (truncated?)") from None


def check_against_manifest(df: pd.DataFrame, path: Path, manifest) -> None:
    """Every audited member and non-member exactly once (less the attack's listed drops), with its true label."""
    audited = df[df.split.isin(("calibration", "test"))]
    expected = {e.index: int(m) for e, m in manifest.audit_entries()}
    counts = audited.sample_id.value_counts()
    twice = counts[counts > 1].index.tolist()
    if twice:
        raise ScoreFileError(f"{path}: sample(s) scored more than once: {sorted(twice)[:5]}")
    got = set(audited.sample_id.astype(int))
    unknown = got - set(expected)
    if unknown:
        raise ScoreFileError(f"{path}: sample(s) {sorted(unknown)[:5]} are not audited images of this run's manifest")
    absent = set(expected) - got - dropped_ids(path)
    if absent:
        raise ScoreFileError(
            f"{path}: {len(absent)} of the run's {len(expected)} audited images have no score "
            f"(e.g. {sorted(absent)[:5]}): the file is partial; rerun the attack"
        )
    wrong = [int(i) for i, m in zip(audited.sample_id, audited.is_member) if expected[int(i)] != int(m)]
    if wrong:
        raise ScoreFileError(f"{path}: is_member disagrees with the manifest for sample(s) {wrong[:5]}")
