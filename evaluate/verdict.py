"""The verdict rules every report, comparison and sign-off uses: which attack is a recipe's strongest, whether it
separates members from non-members at its calibrated threshold, and the recipe's risk level."""

from __future__ import annotations

STRONGEST_RULE = (
    "the strongest attack is the one with the largest lower 95% bound of TPR minus the upper 95% bound "
    "of the achieved FPR at its calibrated 1%-FPR threshold (ties: the larger lower bound of AUC): a "
    "threshold that drifted on the test half cannot inflate it"
)


def strongest(rows: list[dict]) -> dict:
    """STRONGEST_RULE: a conservative lower bound of (TPR - FPR) at the calibrated 1%-FPR threshold."""

    def key(r):
        lo = r.get("tpr@1%fpr_ci_lo", r["tpr@1%fpr"])
        hi = r.get("fpr@1%fpr_achieved_ci_hi", r["fpr@1%fpr_achieved"])
        return (lo - hi, r.get("auc_ci_lo", r["auc"]))

    return max(rows, key=key)


def separates(row: dict) -> bool:
    """At the calibrated 1%-FPR threshold, members are flagged significantly more often than non-members
    (the TPR interval lies wholly above the achieved-FPR interval)."""
    return row["tpr@1%fpr_ci_lo"] > row["fpr@1%fpr_achieved_ci_hi"]


def risk_level(row: dict) -> str:
    """A heuristic, stated in the report: HIGH when the attack clearly finds members at a low false-positive rate or
    ranks them well; MODERATE when leakage is statistically visible; otherwise nothing was detected."""
    if (separates(row) and row["tpr@1%fpr_ci_lo"] >= 0.05) or row["auc_ci_lo"] >= 0.75:
        return "HIGH"
    if separates(row) or row["auc_ci_lo"] > 0.55:
        return "MODERATE"
    return "LOW / NOT DETECTED"
