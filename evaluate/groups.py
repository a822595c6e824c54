"""Risk per group: who is exposed, not only how many (what a DPIA asks).

A group per image comes from one of (`evaluation.groups` in a benchmark, `--groups` on `diffmia audit`):

- `label`: the dataset's class label (digits, MNIST, CIFAR-10; the default where the data has labels);
- `caption:WORD1,WORD2,...`: the first listed word the caption contains (whole words, any case), else "other";
- a CSV file with a `group` column and a `path` (or `source`) column naming each image as the audit lists it (a path
  relative to the CSV's folder, or absolute) or, for a `diffmia run`, as the manifest's `source`.

Per group, under the recipe's strongest attack at its calibrated 1%-FPR threshold (fixed on all calibration
non-members, as reported): test members flagged (TPR, Clopper-Pearson interval), test non-members flagged (the group's
own false-positive rate), and the members' median exposure (-log10 of the calibrated p-value, both halves). A group is
flagged as more exposed than the rest when its members are flagged more often than the other groups' members by a
two-sided Fisher exact test, Holm-corrected over the groups at the 5% level; a group whose non-members are flagged more
often too is said to be flagged as a whole (the attack finds the group, not its members).
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
import pandas as pd

from diffmia.core.errors import DiffmiaError

from .metrics import clopper_pearson, threshold_for_fpr

UNASSIGNED = "(no group)"


class GroupError(DiffmiaError, ValueError):
    """A group specification that cannot be read: an unknown form, a CSV without its columns."""


def group_labels(spec: str | None, images, manifest, ids: list[int]) -> dict[int, str] | None:
    """sample id -> group for `ids`, or None where there is nothing to group by (`label` on data without labels)."""
    if not spec:
        return None
    if spec == "label":
        if images.labels is None:
            return None
        names = getattr(images, "label_names", None)
        return {i: (names[int(images.labels[i])] if names else f"class {int(images.labels[i])}") for i in ids}
    if spec.startswith("caption:"):
        words = [w.strip() for w in spec[len("caption:") :].split(",") if w.strip()]
        if not words:
            raise GroupError(f"groups {spec!r}: list the words after 'caption:' (caption:dog,cat)")
        patterns = [(w, re.compile(rf"\b{re.escape(w)}\b", re.IGNORECASE)) for w in words]
        return {i: next((w for w, p in patterns if p.search(images.captions[i] or "")), "other") for i in ids}
    path = Path(spec)
    if path.suffix.lower() == ".csv":
        return _from_csv(path, images, ids)
    raise GroupError(f"groups {spec!r}: expected 'label', 'caption:WORD,...' or a CSV file with a 'group' column")


def _from_csv(path: Path, images, ids: list[int]) -> dict[int, str]:
    if not path.is_file():
        raise GroupError(f"groups {path}: file not found")
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if not rows or "group" not in rows[0] or not ({"path", "source"} & set(rows[0])):
        raise GroupError(f"groups {path}: needs a 'group' column and a 'path' (or 'source') column")
    named: dict[str, str] = {}
    for lineno, r in enumerate(rows, 2):
        key = (r.get("path") or r.get("source") or "").strip()
        if not key:
            raise GroupError(f"{path}:{lineno}: no path")
        group = (r.get("group") or "").strip() or UNASSIGNED
        named[key] = group
        if r.get("path"):
            named[str((path.parent / key).resolve())] = group
    by_name: dict[str, list[str]] = {}
    for key, group in named.items():
        by_name.setdefault(Path(key).name, []).append(group)
    out = {}
    for i in ids:
        source = images.sources[i]
        group = named.get(source) or named.get(str(Path(source).resolve()))
        if group is None:  # a unique file name also matches (a CSV written from another copy of the folder)
            candidates = set(by_name.get(Path(source).name, []))
            group = candidates.pop() if len(candidates) == 1 else UNASSIGNED
        out[i] = group
    return out


def _fisher(a: int, b: int, c: int, d: int) -> float:
    from scipy.stats import fisher_exact

    return float(fisher_exact([[a, b], [c, d]])[1])


def _holm(p: list[float]) -> list[float]:
    order = np.argsort(p)
    adjusted = np.empty(len(p))
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p) - rank) * p[i]))
        adjusted[i] = running
    return adjusted.tolist()


def group_risk(scores: pd.DataFrame, exposure: pd.DataFrame, groups: dict[int, str], alpha: float = 0.05) -> list[dict]:
    """One row per group (largest first) for the strongest attack's score file and its exposure table."""
    cal = scores[(scores.split == "calibration") & (scores.is_member == 0)].score.to_numpy(float)
    threshold = threshold_for_fpr(cal, 0.01)
    test = scores[scores.split == "test"].copy()
    test["group"] = test.sample_id.map(groups).fillna(UNASSIGNED)
    test["flagged"] = test.score.to_numpy(float) >= threshold
    exposure = exposure.assign(group=exposure.sample_id.map(groups).fillna(UNASSIGNED))
    exposure = exposure.assign(exposure=-np.log10(exposure.p_value.to_numpy(float)))
    members, non = test[test.is_member == 1], test[test.is_member == 0]
    rows = []
    for g in sorted(set(test.group) | set(exposure.group), key=lambda g: (-(test.group == g).sum(), g)):
        m, o = members[members.group == g], members[members.group != g]
        n_in, n_out = non[non.group == g], non[non.group != g]
        tp, fp = int(m.flagged.sum()), int(n_in.flagged.sum())
        row = {
            "group": g,
            "test_members": len(m),
            "tpr": tp / len(m) if len(m) else float("nan"),
            "tpr_ci": clopper_pearson(tp, len(m), alpha) if len(m) else (float("nan"), float("nan")),
            "test_nonmembers": len(n_in),
            "fpr": fp / len(n_in) if len(n_in) else float("nan"),
            "rest_tpr": float(o.flagged.mean()) if len(o) else float("nan"),
            "median_exposure": float(exposure[exposure.group == g].exposure.median())
            if (exposure.group == g).any()
            else float("nan"),
            "p": _fisher(tp, len(m) - tp, int(o.flagged.sum()), len(o) - int(o.flagged.sum()))
            if len(m) and len(o)
            else 1.0,
            "p_nonmembers": _fisher(fp, len(n_in) - fp, int(n_out.flagged.sum()), len(n_out) - int(n_out.flagged.sum()))
            if len(n_in) and len(n_out)
            else 1.0,
        }
        rows.append(row)
    for row, adjusted, adjusted_non in zip(
        rows, _holm([r["p"] for r in rows]), _holm([r["p_nonmembers"] for r in rows])
    ):
        row["p_holm"] = adjusted
        row["more_exposed"] = bool(adjusted < alpha and row["tpr"] > row["rest_tpr"])
        row["flagged_as_a_group"] = bool(row["more_exposed"] and adjusted_non < alpha and row["fpr"] > 0.01)
        row["tpr_ci_lo"], row["tpr_ci_hi"] = row.pop("tpr_ci")
    return rows


def group_lines(rows: list[dict]) -> list[str]:
    """The report's sentences on the groups: the ones more exposed than the rest, or that none is."""
    flagged = [r for r in rows if r["more_exposed"]]
    if not flagged:
        return [
            f"No group's members are flagged significantly more often than the rest's ({len(rows)} groups; Fisher "
            "exact test, Holm-corrected, 5%)."
        ]
    out = []
    for r in flagged:
        text = (
            f"{r['group']}: {r['tpr']:.1%} of its {r['test_members']} test members flagged [{r['tpr_ci_lo']:.1%}, "
            f"{r['tpr_ci_hi']:.1%}] against {r['rest_tpr']:.1%} of the other groups' (Holm-corrected p "
            f"{r['p_holm']:.2g})"
        )
        if r["flagged_as_a_group"]:
            text += (
                f"; its non-members are flagged more often too ({r['fpr']:.1%}): the attack singles out the group, so "
                "an accusation in it is less reliable"
            )
        out.append(text + ".")
    return out
