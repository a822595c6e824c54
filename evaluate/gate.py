"""A gate for a training pipeline's CI: `--fail-if 'tpr@1%fpr > 0.05'` fails the command (exit 3) when a recipe's
strongest attack crosses the limit. Figures are the calibrated ones, by default their upper 95% bound (a gate passes
only what the audit can vouch for); a rate the test split cannot resolve fails the gate (it cannot be vouched for).

    METRIC OP VALUE        METRIC: tpr@1%fpr, tpr@0.1%fpr (or any FPR the evaluation ran), auc, epsilon (the
                           recipe's headline one-run epsilon, a lower bound already), risk (LOW < MODERATE < HIGH)
                           OP: >, >=, <, <=
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from diffmia.core.errors import DiffmiaError

from .plain import measurable
from .verdict import risk_level, strongest

LEVELS = {"LOW": 0, "MODERATE": 1, "HIGH": 2}
BOUNDS = ("upper", "estimate", "lower")
_EXPR = re.compile(r"^\s*(?P<metric>[a-z0-9@.%_]+)\s*(?P<op>>=|<=|>|<)\s*(?P<value>\S+)\s*$", re.I)
_OPS = {">": lambda a, b: a > b, ">=": lambda a, b: a >= b, "<": lambda a, b: a < b, "<=": lambda a, b: a <= b}


class GateError(DiffmiaError):
    """A --fail-if expression that cannot be read or checked."""


@dataclass(frozen=True)
class Gate:
    metric: str
    op: str
    value: float
    text: str

    def describe(self) -> str:
        return self.text.strip()


def parse_gate(text: str, bound: str = "upper") -> Gate:
    """One --fail-if expression, checked before any work starts."""
    if bound not in BOUNDS:
        raise GateError(f"--gate-bound: one of {', '.join(BOUNDS)}, got {bound!r}")
    m = _EXPR.match(text or "")
    if not m:
        raise GateError(f"--fail-if {text!r}: expected METRIC OP VALUE, e.g. 'tpr@1%fpr > 0.05' or 'risk >= MODERATE'")
    metric, op, raw = m.group("metric").lower(), m.group("op"), m.group("value")
    if metric == "risk":
        level = raw.upper().split()[0].split("/")[0]
        if level not in LEVELS:
            raise GateError(f"--fail-if {text!r}: risk is compared with one of {', '.join(LEVELS)}, got {raw!r}")
        return Gate(metric, op, float(LEVELS[level]), text)
    if not (metric in ("auc", "epsilon") or re.fullmatch(r"tpr@[0-9.]+%fpr", metric)):
        raise GateError(
            f"--fail-if {text!r}: unknown metric {metric!r}; one of tpr@1%fpr, tpr@0.1%fpr, auc, epsilon, risk"
        )
    try:
        value = float(raw.rstrip("%")) / (100 if raw.endswith("%") else 1)
    except ValueError:
        raise GateError(f"--fail-if {text!r}: {raw!r} is not a number") from None
    return Gate(metric, op, value, text)


def _figure(gate: Gate, rows: list[dict], info: dict, bound: str) -> tuple[float | None, str]:
    """(the figure the gate compares, how it is described), or (None, why it cannot be measured)."""
    top = strongest(rows)
    if gate.metric == "risk":
        level = risk_level(top)
        return float(LEVELS[level.split()[0]]), f"risk {level} ({top['attack']})"
    if gate.metric == "epsilon":
        headline = info.get("one_run_headline")
        if not headline:
            return None, "no one-run epsilon (no canaries audited)"
        return float(headline["epsilon"]), f"one-run epsilon {headline['epsilon']:.2f} ({headline['attack']})"
    suffix = {"upper": "_ci_hi", "estimate": "", "lower": "_ci_lo"}[bound]
    name = {"upper": "upper 95% bound", "estimate": "estimate", "lower": "lower 95% bound"}[bound]
    if gate.metric.startswith("tpr@"):
        fpr = float(gate.metric[4:].split("%")[0]) / 100
        if gate.metric not in top:
            return None, f"{gate.metric} was not evaluated (evaluation.fprs)"
        if not measurable(top, fpr):
            return None, f"{gate.metric} not measurable with {top['n_test_nonmembers']} test non-members"
    key = gate.metric + suffix
    value = top.get(key)
    if value is None or value != value:
        return None, f"{key} missing"
    shown = f"{value:.1%}" if gate.metric.startswith("tpr@") else f"{value:.3f}"
    return float(value), f"{top['attack']}: {gate.metric} {name} {shown}"


def check_gates(results: dict, gates: list[Gate], bound: str = "upper") -> list[str]:
    """The verdict lines of every (recipe, gate) that fails: crossed, or not measurable (a gate fails closed)."""
    by_recipe: dict[str, list[dict]] = {}
    for r in results.get("rows") or []:
        by_recipe.setdefault(r["recipe"], []).append(r)
    failed = []
    for recipe, rows in by_recipe.items():
        info = results["recipes"][recipe]
        if info.get("seed_of"):
            continue  # a retraining of another recipe: its spread is in the report, the gate reads the recipe
        for gate in gates:
            value, what = _figure(gate, rows, info, bound)
            if value is None:
                failed.append(f"{recipe}: --fail-if {gate.describe()!r} cannot be checked: {what}")
            elif _OPS[gate.op](value, gate.value):
                failed.append(f"{recipe}: --fail-if {gate.describe()!r} crossed: {what}")
    return failed


def gate_cautions(results: dict) -> list[str]:
    """One line per recipe whose blind baseline separates members from non-members without the model: the figures a
    gate reads may then reflect a difference of sources, not membership (said beside the gate's verdict, pass or
    fail; the verdict itself still reads the attacks)."""
    from .blind import shifted

    lines = []
    for recipe, info in (results.get("recipes") or {}).items():
        b = info.get("blind_baseline")
        if info.get("seed_of") or not shifted(b):
            continue
        cause = "a chance imbalance of the random split" if b.get("random_split") else "a difference of sources"
        lines.append(
            f"{recipe}: the blind baseline tells members from non-members without querying the model (AUC "
            f"{b['auc']:.3f} [{b['auc_ci_lo']:.3f}, {b['auc_ci_hi']:.3f}]): the gated figures may reflect {cause}, "
            "not membership"
        )
    return lines
