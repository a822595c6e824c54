"""Rows an attack has already scored on one loaded run, kept so the same computation is never made twice.

Every random draw of an attack is seeded by (attack seed, sample id, draw) alone (see base.per_sample_noise), so an
image's row depends only on the attack's name, its full parameters, its seed and the target: not on the batch or on
which other images were scored with it. Tuning scores every candidate on the calibration half; the chosen candidate's
final run then needs only the test half (and canaries), and a candidate equal to a cell already scored (the paper
default listed in the grid) costs nothing. The matrix keeps one store per trained recipe, `diffmia attack --tune` one
per command.
"""

from __future__ import annotations

import json


class ScoredRows:
    def __init__(self) -> None:
        self._rows: dict[str, dict[int, list]] = {}
        self._columns: dict[str, list[str]] = {}

    @staticmethod
    def key(attack) -> str:
        return json.dumps(
            {"attack": attack.name, "params": attack.params.model_dump(mode="json"), "seed": attack.seed},
            sort_keys=True,
        )

    def add(self, attack, columns: list[str], rows) -> None:
        """Remember `rows` (CSV rows: sample_id first, laid out as `columns`) of `attack`."""
        key = self.key(attack)
        if self._columns.setdefault(key, list(columns)) != list(columns):
            raise ValueError(f"{attack.name}: rows with columns {columns}, expected {self._columns[key]}")
        store = self._rows.setdefault(key, {})
        for row in rows:
            store[int(row[0])] = list(row)

    def add_frame(self, attack, frame) -> None:
        """Remember the rows of a score CSV already on disk (read with pandas)."""
        rows = (
            [int(r[0]), str(r[1]), str(r[2]), int(r[3]), *(float(v) for v in r[4:])]
            for r in frame.itertuples(index=False, name=None)
        )
        self.add(attack, list(frame.columns), rows)

    def get(self, attack) -> dict[int, list]:
        """sample_id -> row of `attack` (empty when nothing of it was scored)."""
        return dict(self._rows.get(self.key(attack), {}))


def split(known: ScoredRows | None, attack, entries: list) -> tuple[dict[int, list], list]:
    """(rows `known` holds for `attack`, the (entry, member) pairs of `entries` still to score)."""
    have = known.get(attack) if known is not None else {}
    return have, [pair for pair in entries if pair[0].index not in have] if have else list(entries)


def in_order(entries: list, have: dict[int, list], computed) -> list[list]:
    """The rows of `entries` in their order (the manifest's, as a run that computed every row writes them), from
    `have` and the `computed` rows; entries without a row (an image the attack dropped) are left out."""
    by_id = {**have, **{r[0]: r for r in computed}}
    return [by_id[e.index] for e, _ in entries if e.index in by_id]
