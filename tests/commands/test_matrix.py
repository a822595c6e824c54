"""The matrix runner: results files, caching and resume, validation before work, the report."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from diffmia.cli import app
from diffmia.core.config import ConfigError, recipe_hash
from diffmia.core.logs import captured
from diffmia.matrix import load_benchmark, run_matrix
from tests.conftest import REPO

BENCH = REPO / "configs" / "tiny-benchmark.yaml"
FAST = ["utility.samples=16", "utility.sample_steps=2", "evaluation.bootstrap=20"]


@pytest.fixture(scope="module")
def matrix(tmp_path_factory):
    out = tmp_path_factory.mktemp("matrix")
    bench, recipes = load_benchmark(BENCH, FAST)
    with captured() as logs:
        results = run_matrix(bench, recipes, out, progress=False)
    return out, results, logs


def test_results_files(matrix):
    out, results, _ = matrix
    df = pd.read_csv(out / "results.csv")
    assert (
        len(df) == 4 and set(df.recipe) == {"short", "longer"} and set(df.attack) == {"naive_loss", "noise_aggregation"}
    )
    for col in (
        "auc",
        "auc_ci_lo",
        "auc_ci_hi",
        "tpr@1%fpr",
        "tpr@1%fpr_ci_lo",
        "tpr@0.1%fpr",
        "asr",
        "tpr@1%fpr_oracle",
        "epsilon_lower_bound",
        "fid",
        "fid_floor",
        "queries_per_sample",
        "attack_seconds",
    ):
        assert col in df.columns, col
    assert (df.auc_ci_lo <= df.auc).all() and (df.auc <= df.auc_ci_hi).all()
    saved = json.loads((out / "results.json").read_text())
    assert saved["rows"][0]["recipe"] == "short" and "manifest_sha256" in saved["recipes"]["short"]
    for r in saved["rows"]:
        assert (out / r["scores"]).is_file()


def test_report_is_self_contained(matrix):
    out, _, _ = matrix
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") >= 5  # privacy-utility, ROC and histogram per recipe, samples
    assert "Risk summary" in page and "What these numbers do not show" in page
    assert "examples-" not in page  # member images only on request
    md = (out / "report.md").read_text()
    assert "| recipe | defenses |" in md and "plots/privacy-utility.png" in md
    for png in ("privacy-utility.png", "roc-short.png", "hist-longer.png"):
        assert (out / "plots" / png).stat().st_size > 1000


def test_rerun_skips_finished_cells(matrix):
    out, results, _ = matrix
    bench, recipes = load_benchmark(BENCH, FAST)
    with captured() as logs:
        again = run_matrix(bench, recipes, out, progress=False)
    assert not any("training" in line or "attack" in line or "utility:" in line for line in logs), logs
    assert [r["auc"] for r in again["rows"]] == [r["auc"] for r in results["rows"]]


def test_utility_code_version_invalidates_cached_fids(matrix, monkeypatch):
    from diffmia.evaluate import fid

    out, results, _ = matrix
    monkeypatch.setattr(fid, "UTILITY_VERSION", fid.UTILITY_VERSION + 1)
    bench, recipes = load_benchmark(BENCH, FAST)
    with captured() as logs:
        again = run_matrix(bench, recipes, out, progress=False)
    assert sum("utility:" in line for line in logs) == 2  # both recipes' FIDs recomputed, nothing else
    assert not any("training" in line or "attack" in line for line in logs), logs
    assert [r["fid"] for r in again["rows"]] == pytest.approx([r["fid"] for r in results["rows"]], rel=1e-4)


def test_resume_after_kill_and_recompute_of_a_lost_cell(tmp_path):
    from diffmia.targets.train import train_target

    bench, recipes = load_benchmark(BENCH, FAST + ["recipes=[{name: short, config: tiny.yaml}]"])
    cfg = recipes["short"]
    run_dir = tmp_path / "recipes" / f"short-{recipe_hash(cfg)}"
    train_target(cfg, run_dir, progress=False, stop_after=12)  # killed mid-training
    with captured() as logs:
        run_matrix(bench, recipes, tmp_path, progress=False)
    assert any("training" in line for line in logs)
    assert (run_dir / "summary.json").is_file()
    # a lost score file is recomputed, the rest reused
    victim = next((run_dir / "scores").glob("naive_loss-*"))
    for f in victim.iterdir():
        f.unlink()
    with captured() as logs:
        run_matrix(bench, recipes, tmp_path, progress=False)
    assert [line for line in logs if "attack" in line] == ["[short] attack naive_loss"]


def test_changed_recipe_gets_a_new_cell(tmp_path):
    bench, recipes = load_benchmark(BENCH, FAST + ["recipes=[{name: a, config: tiny.yaml, set: [train.steps=5]}]"])
    run_matrix(bench, recipes, tmp_path, progress=False)
    bench, recipes = load_benchmark(BENCH, FAST + ["recipes=[{name: a, config: tiny.yaml, set: [train.steps=6]}]"])
    run_matrix(bench, recipes, tmp_path, progress=False)
    assert len(list((tmp_path / "recipes").glob("a-*"))) == 2


def test_seeds_train_the_recipe_again_and_the_report_gives_the_spread(tmp_path):
    """seeds: 2 trains the recipe with seed and seed+1 (recipes a and a+seed1), attacks both, and the report has one
    sign-off for the recipe with the spread across its trainings."""
    bench, recipes = load_benchmark(
        BENCH,
        FAST
        + ["recipes=[{name: a, config: tiny.yaml, seeds: 2, set: [train.steps=5]}]", "attacks=[{name: naive_loss}]"],
    )
    assert list(recipes) == ["a", "a+seed1"] and recipes["a+seed1"].seed == recipes["a"].seed + 1
    results = run_matrix(bench, recipes, tmp_path, progress=False)
    assert [r["recipe"] for r in results["rows"]] == ["a", "a+seed1"]
    assert results["recipes"]["a+seed1"]["seed_of"] == "a" and "seed_of" not in results["recipes"]["a"]
    report = (tmp_path / "report.md").read_text()
    assert "2 trainings (seeds 0, 1)" in report and "## Spread across trainings" in report
    assert "### a+seed1" not in report.split("## Sign-off")[1].split("## What a confident")[0]


@pytest.mark.parametrize(
    "override, match",
    [
        ("attacks=[{name: secmii}]", "attacks.0: unknown attack 'secmii' \\(did you mean 'secmi'\\?\\)"),
        ("attacks=[{name: pia, params: {tt: 3}}]", "attacks.0: attack pia: tt: unknown key"),
        ("recipes=[{name: x, config: nothing.yaml}]", "recipes.0 \\(x\\): .*nothing.yaml: config file not found"),
        (
            "recipes=[{name: x, config: tiny.yaml, set: [train.stepz=3]}]",
            "recipes.0 \\(x\\): .*train.stepz: unknown key",
        ),
        ("utility.featurez=clip", "utility.featurez: unknown key \\(did you mean 'features'\\?\\)"),
        ("recipes=[{name: a, config: tiny.yaml}, {name: a, config: tiny.yaml}]", "recipe names must be unique"),
        (
            "recipes=[{name: a, config: tiny.yaml, seeds: 2}, {name: a+seed1, config: tiny.yaml}]",
            "recipe names must be unique; repeated: \\['a\\+seed1'\\]",
        ),
        ("recipes=[{name: a, config: tiny.yaml, seeds: 0}]", "recipes.0.seeds"),
    ],
)
def test_bad_benchmark_is_refused_before_any_work(override, match):
    with pytest.raises(ConfigError, match=match):
        load_benchmark(BENCH, [override])


def test_cli_run_and_report_with_examples(tmp_path):
    runner = CliRunner()
    args = [
        "run",
        str(BENCH),
        "--out",
        str(tmp_path),
        "--no-progress",
        *sum((["--set", s] for s in FAST), []),
        "--set",
        "recipes=[{name: short, config: tiny.yaml}]",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "report:" in result.output
    result = runner.invoke(app, ["report", str(tmp_path), "--show-examples"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "plots" / "examples-short.png").is_file()
    assert "Most exposed test members" in (tmp_path / "report.html").read_text()
    bad = runner.invoke(app, ["report", str(tmp_path / "nowhere")])
    assert bad.exit_code == 2 and "no results.json" in bad.output


def test_cli_evaluate(tiny_run, tmp_path):
    runner = CliRunner()
    assert runner.invoke(app, ["attack", str(tiny_run), "--attack", "pia", "--no-progress"]).exit_code == 0
    result = runner.invoke(app, ["evaluate", str(tiny_run), "--bootstrap", "20", "--out", str(tmp_path / "m.json")])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert "pia" in metrics and 0 <= metrics["pia"]["auc"] <= 1


@pytest.mark.slow
def test_report_renders_in_headless_chromium(matrix, tmp_path):
    import importlib.util

    from diffmia.evaluate.report import chromium

    if not chromium():
        pytest.skip("Chromium not installed (apt-get install chromium); run scripts/check_report_render.py where it is")
    spec = importlib.util.spec_from_file_location("check", REPO / "scripts" / "check_report_render.py")
    check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(check)
    out, _, _ = matrix
    loaded, total, wide, broken = check.probe(out / "report.html", tmp_path / "shot.png", words=True)
    assert total >= 5 and loaded == total
    assert not wide, f"runs off a {check.WIDTH} px page: {wide}"  # the wide results table once cut the FID column
    assert not broken, f"words broken inside a table cell at {check.WIDTH} px: {broken}"  # once "reci pe", "HI GH"
    assert Path(tmp_path / "shot.png").stat().st_size > 10000


@pytest.mark.slow
def test_run_killed_inside_and_between_cells_resumes_to_the_same_results(tmp_path):
    """Fault injection: kill -9 `diffmia run` while a recipe trains (after its first checkpoint) and again between
    attack cells, rerun the same command each time: results equal a run never interrupted (timings aside)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    env = dict(os.environ, OMP_NUM_THREADS="1")
    bench = str(REPO / "configs" / "tiny-benchmark.yaml")

    def command(out):
        return [
            sys.executable,
            "-m",
            "diffmia",
            "run",
            bench,
            "--only",
            "short",
            "--set",
            "utility.enabled=false",
            "--out",
            str(out),
            "--no-progress",
        ]

    def kill_when(out, pattern):
        proc = subprocess.Popen(
            command(out), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        deadline = time.time() + 300
        while proc.poll() is None and time.time() < deadline and not list(out.glob(pattern)):
            time.sleep(0.02)
        killed = proc.poll() is None
        if killed:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return killed

    clean, hurt = tmp_path / "clean", tmp_path / "hurt"
    subprocess.run(command(clean), env=env, check=True, capture_output=True)
    kills = [
        kill_when(hurt, "recipes/short-*/checkpoints/step-*"),  # inside the training cell
        kill_when(hurt, "recipes/short-*/scores/naive_loss-*/naive_loss.csv"),
    ]  # between attack cells
    assert any(kills)  # at least one kill landed before the run finished on its own
    subprocess.run(command(hurt), env=env, check=True, capture_output=True)
    timing = ["attack_seconds", "train_seconds", "reference_seconds"]
    a = pd.read_csv(clean / "results.csv").drop(columns=timing)
    b = pd.read_csv(hurt / "results.csv").drop(columns=timing)
    pd.testing.assert_frame_equal(a, b)
    for path in sorted(clean.glob("recipes/*/scores/*/*.csv")):
        assert path.read_bytes() == (hurt / path.relative_to(clean)).read_bytes(), path
    assert not list(hurt.rglob("*.tmp"))


def _frame(member_scores, nonmember_scores):
    rows = []
    for flag, scores in ((1, member_scores), (0, nonmember_scores)):
        for i, s in enumerate(scores):
            rows.append(
                {
                    "sample_id": flag * 10000 + i,
                    "split": "calibration" if i % 2 else "test",
                    "is_member": flag,
                    "score": float(s),
                }
            )
    return pd.DataFrame(rows)


def test_paired_comparison_verdicts_by_construction():
    from diffmia.evaluate.compare import low_fpr_verdict, paired_difference, verdict

    rng = np.random.default_rng(0)
    noise_m, noise_n = rng.normal(size=400), rng.normal(size=400)
    leaky = _frame(noise_m + 3.0, noise_n)  # members far above non-members
    blind = _frame(rng.normal(size=400), rng.normal(size=400))
    d = paired_difference(blind, leaky, n_boot=300)
    assert d["paired_test_images"] == 400 and d["d_auc"] < -0.3 and verdict(d) == "leaks less, significantly"
    assert verdict(paired_difference(leaky, blind, n_boot=300)) == "leaks more, significantly"
    same = paired_difference(leaky, leaky, n_boot=300)
    assert same["d_auc"] == 0 and same["d_auc_lo"] == 0 == same["d_auc_hi"]
    assert verdict(same) == "no significant difference at this sample size"
    assert low_fpr_verdict(d) == "finds fewer members at 1% FPR, significantly"
    assert low_fpr_verdict(same) == "no significant difference at 1% FPR at this sample size"
    level = {"d_auc_lo": -0.02, "d_auc_hi": 0.02, "d_tpr@1%fpr_lo": -0.20, "d_tpr@1%fpr_hi": -0.05}  # as measured
    assert verdict(level) == "no significant difference at this sample size"
    assert low_fpr_verdict(level) == "finds fewer members at 1% FPR, significantly"
    other = leaky.assign(sample_id=leaky.sample_id + 50000)
    with pytest.raises(ValueError, match="different images"):
        paired_difference(other, leaky)


def test_cli_compare_and_report_section(matrix):
    out, _, _ = matrix
    result = CliRunner().invoke(app, ["compare", str(out), "--baseline", "short", "--bootstrap", "200"])
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(out / "compare-short.csv")
    assert list(frame.recipe) == ["longer"] and frame.verdict.iloc[0] in (
        "leaks less, significantly",
        "leaks more, significantly",
        "no significant difference at this sample size",
    )
    assert frame["verdict_at_1%fpr"].iloc[0].endswith(("significantly", "at this sample size"))
    report = (out / "report.md").read_text()
    assert "Paired comparison with short" in report and "## Sign-off" in report
    assert "no reference-model attack (LiRA/RMIA)" in report and "Reviewed by:" in report
    assert (out / "exposure.csv").is_file()
    bad = CliRunner().invoke(app, ["compare", str(out), "--baseline", "nope"])
    assert bad.exit_code == 2 and "no recipe 'nope'" in bad.output


@pytest.mark.slow
def test_report_pdf_prints_where_chromium_is(matrix):
    from diffmia.evaluate.report import chromium

    out, _, _ = matrix
    result = CliRunner().invoke(app, ["report", str(out), "--pdf"])
    if not chromium():
        assert result.exit_code == 2 and "--pdf needs Chromium" in result.output
        pytest.skip("Chromium not installed: the PDF's absence is a clear error (checked)")
    assert result.exit_code == 0, result.output
    assert (out / "report.pdf").read_bytes()[:5] == b"%PDF-"


def test_tuned_cell_reuses_the_default_cell_read_from_the_cache(tmp_path):
    """A tuned cell whose grid holds the paper default takes that candidate's calibration rows from the default cell,
    also when the default cell comes from the disk cache of an earlier run; the results equal a run that reused none."""
    import shutil

    sets = FAST + [
        "utility.enabled=false",
        "recipes=[{name: a, config: tiny.yaml, set: [train.steps=5]}]",
        "attacks=[{name: naive_loss}, {name: naive_loss, label: tuned, tune: {timestep: [200, 50]}}]",
    ]
    bench, recipes = load_benchmark(BENCH, sets)
    first = run_matrix(bench, recipes, tmp_path, progress=False)
    (tuned_dir,) = [d for d in (tmp_path / "recipes").glob("a-*/scores/tuned-*")]
    record = json.loads((tuned_dir / "naive_loss.json").read_text())
    n_cal = sum(1 for r in pd.read_csv(tuned_dir / "naive_loss.csv").itertuples() if r.split == "calibration")
    assert record["tuned"]["calibration_rows_reused"] == n_cal  # t = 200 is the default cell's
    shutil.rmtree(tuned_dir)  # score the tuned cell again, the default cell now read from disk
    again = run_matrix(bench, recipes, tmp_path, progress=False)
    record = json.loads((tuned_dir / "naive_loss.json").read_text())
    assert record["tuned"]["calibration_rows_reused"] == n_cal
    assert record["reused_rows"] >= n_cal
    timing = ["attack_seconds"]
    pd.testing.assert_frame_equal(
        pd.DataFrame(first["rows"]).drop(columns=timing), pd.DataFrame(again["rows"]).drop(columns=timing)
    )


def test_python_api_returns_what_the_command_writes(matrix):
    """diffmia.run on a finished folder: every cell from the cache, the same rows as results.csv, each recipe's
    strongest attack by the report's rule; Results.load reads the folder back."""
    import diffmia
    from diffmia.evaluate.verdict import strongest

    out, results, _ = matrix
    with captured() as logs:
        api = diffmia.run(BENCH, out=out, overrides=FAST, progress=False)
    assert isinstance(api, diffmia.Results) and api.folder == out and api.report == out / "report.html"
    assert not any("training" in line or "attack" in line for line in logs), logs
    table = api.table()
    assert list(table.attack) == [r["attack"] for r in results["rows"]]
    assert list(table.auc) == [r["auc"] for r in results["rows"]]
    recipe = results["rows"][0]["recipe"]
    assert api.strongest()[recipe] == strongest([r for r in api.rows if r["recipe"] == recipe])
    assert diffmia.Results.load(out).rows == api.rows
    with pytest.raises(diffmia.api.ConfigError, match="--only: .* has no recipe nope"):
        diffmia.run(BENCH, out=out, overrides=FAST, only=["nope"], progress=False)
