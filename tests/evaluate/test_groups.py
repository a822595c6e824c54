"""Risk per group (evaluate/groups.py): per group TPR at the strongest attack's calibrated threshold, a group more
exposed than the rest flagged by a corrected Fisher test, groups from labels, caption words and a CSV; in `diffmia
audit` the report's section and exposure.csv's group column."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from diffmia.cli import app
from diffmia.evaluate.exposure import calibrated_p_values
from diffmia.evaluate.groups import GroupError, group_labels, group_lines, group_risk
from diffmia.targets.data import ImageSet
from tests.commands.test_audit import elsewhere  # noqa: F401 - the fixture


def scores_with_an_exposed_group(group_a_nonmembers_high: bool = False, seed: int = 0, n: int = 800):
    """n / 2 members and n / 2 non-members in groups a / b / c; a's members (and, if asked, its non-members, less)
    score high."""
    rng = np.random.default_rng(seed)
    ids = np.arange(n)
    is_member = (ids < n // 2).astype(int)
    group = np.array(["a", "b", "c", "c"])[ids % 4]
    score = rng.normal(size=n)
    score[(is_member == 1) & (group == "a")] += 3.0
    if group_a_nonmembers_high:
        score[(is_member == 0) & (group == "a")] += 2.0
    split = np.where(rng.random(n) < 0.5, "calibration", "test")
    frame = pd.DataFrame({"sample_id": ids, "split": split, "is_member": is_member, "score": score})
    members = frame[frame.is_member == 1]
    cal = frame[(frame.split == "calibration") & (frame.is_member == 0)].score.to_numpy()
    exposure = pd.DataFrame({"sample_id": members.sample_id, "p_value": calibrated_p_values(members.score, cal)})
    return frame, exposure, dict(zip(ids.tolist(), group.tolist()))


def test_the_exposed_group_is_flagged_and_the_others_are_not():
    frame, exposure, groups = scores_with_an_exposed_group()
    rows = {r["group"]: r for r in group_risk(frame, exposure, groups)}
    assert list(rows)[0] == "c" and set(rows) == {"a", "b", "c"}  # largest first
    assert rows["a"]["more_exposed"] and not rows["a"]["flagged_as_a_group"]
    assert not rows["b"]["more_exposed"] and not rows["c"]["more_exposed"]
    assert rows["a"]["tpr"] > 0.5 > rows["b"]["tpr"] and rows["a"]["tpr_ci_lo"] <= rows["a"]["tpr"]
    # the counts by hand: test members of a flagged at the threshold fixed on all calibration non-members
    from diffmia.evaluate.metrics import threshold_for_fpr

    t = threshold_for_fpr(frame[(frame.split == "calibration") & (frame.is_member == 0)].score.to_numpy(), 0.01)
    a = frame[(frame.split == "test") & (frame.is_member == 1) & (frame.sample_id % 4 == 0)]
    assert rows["a"]["tpr"] == pytest.approx((a.score >= t).mean()) and rows["a"]["test_members"] == len(a)
    assert rows["a"]["median_exposure"] > rows["b"]["median_exposure"]
    assert group_lines(list(rows.values()))[0].startswith("a: ")


def test_a_group_flagged_as_a_whole_is_said_so():
    frame, exposure, groups = scores_with_an_exposed_group(group_a_nonmembers_high=True, n=4000)
    rows = {r["group"]: r for r in group_risk(frame, exposure, groups)}
    assert rows["a"]["more_exposed"] and rows["a"]["flagged_as_a_group"]
    assert "singles out the group" in group_lines(list(rows.values()))[0]


def test_no_group_is_flagged_when_none_differs():
    frame, exposure, groups = scores_with_an_exposed_group()
    frame.loc[frame.is_member == 1, "score"] = np.random.default_rng(5).normal(size=400) + 1.0  # groups alike
    rows = group_risk(frame, exposure, groups)
    assert not any(r["more_exposed"] for r in rows)
    assert group_lines(rows)[0].startswith("No group's members are flagged significantly more often")


def test_groups_from_labels_captions_and_a_csv(tmp_path):
    images = ImageSet(
        "t",
        np.zeros((4, 2, 2, 1), np.uint8) + np.arange(4, dtype=np.uint8)[:, None, None, None],
        [str(tmp_path / f"{i}.png") for i in range(4)],
        ["A Dog on grass", "a cat", "dogs", ""],
        labels=np.array([0, 1, 1, 0]),
    )
    assert group_labels("label", images, None, [0, 1, 2, 3]) == {0: "class 0", 1: "class 1", 2: "class 1", 3: "class 0"}
    assert group_labels("caption:dog,cat", images, None, [0, 1, 2, 3]) == {0: "dog", 1: "cat", 2: "other", 3: "other"}
    (tmp_path / "groups.csv").write_text("path,group\n0.png,x\n1.png,y\n2.png,\n")
    assert group_labels(str(tmp_path / "groups.csv"), images, None, [0, 1, 2, 3]) == {
        0: "x",
        1: "y",
        2: "(no group)",
        3: "(no group)",
    }
    (tmp_path / "bad.csv").write_text("file,team\na,b\n")
    with pytest.raises(GroupError, match="needs a 'group' column"):
        group_labels(str(tmp_path / "bad.csv"), images, None, [0])
    with pytest.raises(GroupError, match="expected 'label'"):
        group_labels("colour", images, None, [0])
    unlabelled = ImageSet("u", images.pixels, images.sources, images.captions)
    assert group_labels("label", unlabelled, None, [0]) is None


def test_audit_with_groups_from_a_csv(elsewhere, tmp_path):  # noqa: F811
    files = sorted((elsewhere / "members").iterdir()) + sorted((elsewhere / "nonmembers").iterdir())
    lines = [f"{f.parent.name}/{f.name},{'odd' if int(f.stem) % 2 else 'even'}" for f in files]
    (elsewhere / "groups.csv").write_text("path,group\n" + "\n".join(lines) + "\n")
    out = tmp_path / "audit"
    args = ["audit", str(elsewhere / "model"), "--members", str(elsewhere / "members")]
    args += ["--nonmembers", str(elsewhere / "nonmembers"), "--attack", "naive_loss", "--bootstrap", "20"]
    result = CliRunner().invoke(app, [*args, "--groups", str(elsewhere / "groups.csv"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    rows = results["groups"]["model"]["rows"]
    assert {r["group"] for r in rows} == {"odd", "even"}
    assert sum(r["test_members"] for r in rows) == results["rows"][0]["n_test_members"]
    exposure = pd.read_csv(out / "exposure.csv")
    expected = {int(f.stem) % 2 for f in sorted((elsewhere / "members").iterdir())}
    assert set(exposure.group) == {"odd", "even"} and len(expected) == 2
    report = (out / "report.md").read_text()
    assert "Who is exposed: risk per group" in report and "groups more exposed than the rest" in report

    bad = CliRunner().invoke(app, [*args, "--groups", str(tmp_path / "missing.csv"), "--out", str(tmp_path / "b")])
    assert bad.exit_code == 2 and "missing.csv: file not found" in bad.output
    assert not (tmp_path / "b").exists()  # refused before any work
