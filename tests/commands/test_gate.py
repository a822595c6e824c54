"""The CI gate: `--fail-if` exits 3 with the verdict line when a recipe's strongest attack crosses the limit (its
upper 95% bound by default), passes with exit 0 otherwise, fails closed on a rate the test split cannot resolve, and
a bad expression is exit 2 before any work."""

import pytest
from typer.testing import CliRunner

from diffmia.cli import app
from diffmia.evaluate.gate import GateError, check_gates, gate_cautions, parse_gate
from tests.commands.test_audit import elsewhere  # noqa: F401 - the fixture: a tiny model copied out of its run


def _results(**top):
    row = {
        "recipe": "r",
        "attack": "pia",
        "n_test_members": 500,
        "n_test_nonmembers": 500,
        "auc": 0.70,
        "auc_ci_lo": 0.65,
        "auc_ci_hi": 0.75,
        "tpr@1%fpr": 0.04,
        "tpr@1%fpr_ci_lo": 0.02,
        "tpr@1%fpr_ci_hi": 0.07,
        "fpr@1%fpr_achieved": 0.01,
        "fpr@1%fpr_achieved_ci_hi": 0.023,
        "tpr@0.1%fpr": 0.01,
        "tpr@0.1%fpr_ci_lo": 0.0,
        "tpr@0.1%fpr_ci_hi": 0.02,
        **top,
    }
    return {"rows": [row], "recipes": {"r": {}}}


def test_the_upper_bound_decides_by_default():
    gate = parse_gate("tpr@1%fpr > 0.05")
    assert check_gates(_results(), [gate]) == [
        "r: --fail-if 'tpr@1%fpr > 0.05' crossed: pia: tpr@1%fpr upper 95% bound 7.0%"
    ]
    assert check_gates(_results(), [parse_gate("tpr@1%fpr > 0.05", "estimate")], "estimate") == []
    assert check_gates(_results(), [parse_gate("tpr@1%fpr > 5%")]) != []  # percent accepted
    assert check_gates(_results(), [parse_gate("auc > 0.8")]) == []
    assert check_gates(_results(), [parse_gate("risk >= MODERATE")])  # AUC lower bound 0.65 > 0.55: MODERATE


def test_a_rate_the_test_split_cannot_resolve_fails_the_gate():
    failed = check_gates(_results(), [parse_gate("tpr@0.1%fpr > 0.05")])
    assert failed == [
        "r: --fail-if 'tpr@0.1%fpr > 0.05' cannot be checked: tpr@0.1%fpr not measurable with 500 test non-members"
    ]
    assert "no one-run epsilon" in check_gates(_results(), [parse_gate("epsilon > 1")])[0]


@pytest.mark.parametrize(
    "text, match",
    [("tpr > 0.05", "unknown metric"), ("auc >> 1", "expected METRIC OP VALUE"), ("risk > SEVERE", "one of LOW")],
)
def test_bad_expressions_are_refused(text, match):
    with pytest.raises(GateError, match=match):
        parse_gate(text)


def test_audit_with_a_gate_exits_3_or_0(elsewhere, tmp_path):  # noqa: F811 - the imported fixture
    base = ["audit", str(elsewhere / "model"), "--members", str(elsewhere / "members"), "--nonmembers"]
    base += [str(elsewhere / "nonmembers"), "--attack", "naive_loss", "--bootstrap", "10", "--no-progress"]
    crossed = CliRunner().invoke(app, base + ["--out", str(tmp_path / "a"), "--fail-if", "auc > 0.5"])
    assert crossed.exit_code == 3 and "gate failed: model: --fail-if 'auc > 0.5' crossed: naive_loss" in crossed.output
    passed = CliRunner().invoke(app, base + ["--out", str(tmp_path / "b"), "--fail-if", "auc > 1.0"])
    assert passed.exit_code == 0 and "gate passed: auc > 1.0 (upper bounds)" in passed.output
    bad = CliRunner().invoke(app, base + ["--out", str(tmp_path / "c"), "--fail-if", "tpr@1%fpr >> 1"])
    assert bad.exit_code == 2 and not (tmp_path / "c").exists()  # refused before any work
    eps = CliRunner().invoke(app, base + ["--out", str(tmp_path / "d"), "--fail-if", "epsilon > 1"])
    assert eps.exit_code == 2 and "no canaries" in eps.output


def test_a_shifted_blind_baseline_is_said_beside_the_gate():
    results = _results()
    assert gate_cautions(results) == []
    results["recipes"]["r"]["blind_baseline"] = {"auc": 0.55, "auc_ci_lo": 0.45, "auc_ci_hi": 0.65}
    assert gate_cautions(results) == []  # not separated: nothing to say
    results["recipes"]["r"]["blind_baseline"] = {"auc": 0.93, "auc_ci_lo": 0.88, "auc_ci_hi": 0.97}
    (line,) = gate_cautions(results)
    assert line.startswith("r: the blind baseline tells members from non-members without querying the model")
    assert "AUC 0.930 [0.880, 0.970]" in line and "a difference of sources, not membership" in line
    results["recipes"]["r"]["blind_baseline"]["random_split"] = True
    assert "a chance imbalance of the random split" in gate_cautions(results)[0]
