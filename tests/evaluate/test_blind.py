"""The blind baseline (evaluate/blind.py): a model-free classifier of the member and non-member images. It flags
non-members from another source (the same digits JPEG-compressed or rescaled) and does not flag a random split of one
dataset; in `diffmia audit` it sits beside the attacks in results.json and the report, and a shift changes the
verdict's wording."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits
from typer.testing import CliRunner

from diffmia.cli import app
from diffmia.evaluate.blind import cross_fit, image_features, shifted
from diffmia.evaluate.metrics import evaluate_scores
from tests.commands.test_audit import elsewhere  # noqa: F401 - the fixture


def digits(n: int = 512, seed: int = 0) -> np.ndarray:
    px = (load_digits().images * (255 / 16)).round().astype(np.uint8)[..., None]
    return px[np.random.default_rng(seed).permutation(len(px))[:n]]


def jpeg(a: np.ndarray, quality: int = 75) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(a[..., 0]).save(buf, format="JPEG", quality=quality)
    return np.asarray(Image.open(buf))[..., None]


def rescaled(a: np.ndarray) -> np.ndarray:
    im = Image.fromarray(a[..., 0])
    return np.asarray(im.resize((4, 4), Image.BILINEAR).resize((8, 8), Image.BILINEAR))[..., None]


def baseline_metrics(members: np.ndarray, nonmembers: np.ndarray, seed: int = 0) -> dict:
    y = np.r_[np.ones(len(members)), np.zeros(len(nonmembers))]
    split = np.where(np.random.default_rng(seed).random(len(y)) < 0.5, "calibration", "test")
    scores = cross_fit(image_features(np.concatenate([members, nonmembers])), y, split, seed)
    assert not np.isnan(scores).any()
    m = evaluate_scores(y, scores, split, n_boot=300)
    return {"auc": m["auc"], "auc_ci_lo": m["auc_ci"][0], "auc_ci_hi": m["auc_ci"][1]}


def test_features_are_of_each_image_alone():
    px = digits(100)
    whole = image_features(px)
    # no statistic of the batch leaks in (equal to the last bits a vectorised sum may round differently)
    assert np.allclose(whole[37:38], image_features(px[37:38]), rtol=1e-12, atol=1e-12)
    assert np.allclose(whole, image_features(px, chunk=7), rtol=1e-12, atol=1e-12)
    rgb = np.repeat(px, 3, axis=-1)
    assert image_features(rgb).shape[1] == whole.shape[1] + 2 * 9 + 4  # 9 statistics per extra channel, 4 of colour


def test_a_random_split_of_one_dataset_is_not_flagged():
    px = digits(512)
    m = baseline_metrics(px[:256], px[256:])
    assert m["auc_ci_lo"] < 0.5 < m["auc_ci_hi"] and not shifted(m), m


@pytest.mark.parametrize("shift", [jpeg, rescaled], ids=["jpeg-75", "rescaled"])
def test_nonmembers_from_another_source_are_flagged(shift):
    px = digits(512)
    m = baseline_metrics(px[:256], np.stack([shift(a) for a in px[256:]]))
    assert shifted(m) and m["auc"] > 0.9, m


def test_false_alarms_on_random_splits_are_at_the_nominal_rate():
    """Under the null (20 random 64 + 64 splits of the digits) the one-sided 2.5% test flags few (the rate itself,
    over 40 splits: benchmarks/blind_baseline.py)."""
    px = (load_digits().images * (255 / 16)).round().astype(np.uint8)[..., None]
    flagged = 0
    for seed in range(20):
        chosen = px[np.random.default_rng(100 + seed).permutation(len(px))[:128]]
        flagged += shifted(baseline_metrics(chosen[:64], chosen[64:], seed))
    assert flagged <= 2, flagged


def test_cross_fitting_is_seeded_and_uses_the_calibration_halves_only():
    px = digits(200)
    y = np.r_[np.ones(100), np.zeros(100)]
    split = np.where(np.arange(200) % 2 == 0, "calibration", "test")
    f = image_features(px)
    first = cross_fit(f, y, split, 3)
    assert np.array_equal(first, cross_fit(f, y, split, 3))
    # the test labels are never read: flipping them leaves every score as it was
    flipped = y.copy()
    flipped[split == "test"] = 1 - flipped[split == "test"]
    assert np.array_equal(first, cross_fit(f, flipped, split, 3))


def audit(model, members, nonmembers, out):
    result = CliRunner().invoke(
        app,
        [
            "audit",
            str(model),
            "--members",
            str(members),
            "--nonmembers",
            str(nonmembers),
            "--attack",
            "naive_loss",
            "--out",
            str(out),
            "--bootstrap",
            "200",
            "--no-progress",
        ],
    )
    assert result.exit_code == 0, result.output
    return json.loads((out / "results.json").read_text()), (out / "report.md").read_text()


def jpeg_folder(source, folder):
    """The images of `source` JPEG-compressed at quality 60 (another source's preprocessing), saved as PNG again."""
    folder.mkdir()
    for file in sorted(source.iterdir()):
        Image.fromarray(jpeg(np.asarray(Image.open(file))[..., None], 60)[..., 0]).save(folder / file.name)
    return folder


def test_audit_reports_the_baseline_and_flags_mismatched_folders(elsewhere, tmp_path):  # noqa: F811
    results, report = audit(elsewhere / "model", elsewhere / "members", elsewhere / "nonmembers", tmp_path / "same")
    b = results["recipes"]["model"]["blind_baseline"]
    assert b["scores"] == "blind-baseline/model.csv" and not b["random_split"]
    blind_file = tmp_path / "same" / b["scores"]
    assert blind_file.is_file() and (blind_file.stat().st_mode & 0o077) == 0  # owner-only, as every score file
    assert "source" not in blind_file.read_text().splitlines()[0]  # no file names
    assert [p["attack"] for p in b["paired"]] == ["naive_loss"]
    assert "blind baseline (no model)" in report  # a row of the results table
    # 64 + 64 digits drawn at random: this split's content happens to be imbalanced (AUC ~0.6, lower bound near
    # 0.5); whatever the baseline says, the report says the same
    assert ("not told apart without the model" in report) == (not shifted(b))

    other = jpeg_folder(elsewhere / "nonmembers", tmp_path / "jpeg-nonmembers")
    results, report = audit(elsewhere / "model", elsewhere / "members", other, tmp_path / "shifted")
    b = results["recipes"]["model"]["blind_baseline"]
    assert shifted(b), b
    assert "THE SETS DIFFER IN DISTRIBUTION" in report and "Caution: A classifier that never queries" in report
    assert "attack figures at that level are not evidence of membership" in report
    assert r"\[ \] members and non-members from one distribution: the blind baseline separates them" in report


def test_the_roc_plot_draws_the_baseline():
    from diffmia.evaluate.plots import roc_figure

    rng = np.random.default_rng(0)
    y = np.r_[np.ones(50, bool), np.zeros(50, bool)]
    fig = roc_figure("t", {"a": (y, rng.random(100) + y)}, baseline=(y, rng.random(100)))
    drawn = [line for ax in fig.axes for line in ax.get_lines() if line.get_gid() == "blind-baseline"]
    assert len(drawn) == 2  # the linear and the log-log panel


def test_the_owner_test_does_not_claim_use_when_the_collections_differ(elsewhere, tmp_path):  # noqa: F811
    """`diffmia owner` with a reference collection from another source (the non-members JPEG-compressed): the blind
    baseline separates the two collections and the verdict says so (owner_verdict: a significant p is withdrawn)."""
    reference = jpeg_folder(elsewhere / "nonmembers", tmp_path / "jpeg-reference")
    out = tmp_path / "owner"
    args = ["owner", str(elsewhere / "model"), "--suspect", str(elsewhere / "members"), "--reference", str(reference)]
    args += ["--attack", "naive_loss", "--permutations", "500", "--out", str(out), "--no-progress"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "owner.json").read_text())
    blind = report["blind_baseline"]
    assert blind["differ"] and blind["permutation_p"] < 0.05 and "never queried" in blind["method"]
    assert "the two collections DIFFER IN DISTRIBUTION" in result.output
    if report["combined"]["permutation_p"] < 0.05:
        assert report["verdict"].startswith("INCONCLUSIVE: the suspect and reference images differ in distribution")
    else:
        assert "note: the suspect and reference images differ in distribution" in report["verdict"]


def test_the_owner_verdict_is_withdrawn_only_when_the_collections_differ():
    from diffmia.owner import owner_verdict

    alike, differ = {"differ": False, "permutation_p": 0.4}, {"differ": True, "permutation_p": 0.002}
    assert owner_verdict(0.001, alike).startswith("the model was very likely trained on the suspect collection")
    assert owner_verdict(0.03, alike).startswith("evidence that the suspect collection was used")
    withdrawn = owner_verdict(0.001, differ)
    assert withdrawn.startswith("INCONCLUSIVE: the suspect and reference images differ in distribution")
    assert "model-based p = 0.001 may come from that difference" in withdrawn and "p = 0.002" in withdrawn
    assert owner_verdict(0.5, differ).startswith("no evidence at this set size") and "; note: " in owner_verdict(
        0.5, differ
    )
