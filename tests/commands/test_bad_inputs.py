"""Bad inputs and interruptions from the CLI sweep: each gets one line naming the file or field, exit 2,
and leaves nothing half-written behind."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from diffmia.cli import app
from tests.conftest import TINY


@pytest.fixture(scope="module")
def scored_run(tiny_run, tmp_path_factory) -> Path:
    """A copy of the tiny run with naive_loss scores, for the cases that damage a run."""
    run = tmp_path_factory.mktemp("bad") / "run"
    shutil.copytree(tiny_run, run)
    result = CliRunner().invoke(app, ["attack", str(run), "--attack", "naive_loss", "--no-progress"])
    assert result.exit_code == 0, result.output
    return run


def _damage_weights(run: Path, how: str) -> None:
    weights = next((run / "target" / "unet").glob("*.safetensors"))
    if how == "missing":
        weights.unlink()
    elif how == "truncated":
        weights.write_bytes(weights.read_bytes()[:1000])
    elif how == "corrupt":
        weights.write_bytes(bytes(range(256)) * 200)
    elif how == "unknown class":
        index = run / "target" / "model_index.json"
        index.write_text(index.read_text().replace("DDPMPipeline", "FooPipeline"))


def _damage_scores(run: Path, how: str) -> None:
    path = run / "scores" / "naive_loss.csv"
    df = pd.read_csv(path)
    if how == "cut short":
        df = df.iloc[:-2]
    elif how == "no column":
        df = df.drop(columns=["score"])
    elif how == "no non-members":
        df = df[df.is_member == 1]
    elif how == "truncated":
        path.write_text(path.read_text()[:200])
        return
    df.to_csv(path, index=False)


# (case, argv with {TINY} {OUT} {RUN} {FILE} {EMPTY}, setup of the run copy, expected message)
CASES = [
    (
        "unreachable DP budget",
        ["train", "{TINY}", "--set", "defenses=[{name: dp_sgd, epsilon: 1.0e-6}]", "--out", "{OUT}"],
        None,
        "epsilon 1e-06 is out of reach at delta 1e-05 with 20 steps at sample rate 0.25",
    ),
    (
        "boolean where a count belongs",
        ["train", "{TINY}", "--set", "train.steps=true", "--out", "{OUT}"],
        None,
        "train.steps: Input should be a valid integer",
    ),
    ("empty config", ["train", "{EMPTY}", "--out", "{OUT}"], None, "the config is empty"),
    ("--out empty", ["train", "{TINY}", "--out", ""], None, "--out is empty (an unset shell variable?)"),
    ("--out is a file", ["train", "{TINY}", "--out", "{FILE}"], None, "exists and is not a folder"),
    ("evaluate --out is a folder", ["evaluate", "{RUN}", "--out", "{RUN}"], None, "is a folder; name a file"),
    (
        "weights missing",
        ["attack", "{RUN}", "--attack", "naive_loss"],
        ("weights", "missing"),
        "cannot load the DDPMPipeline weights",
    ),
    (
        "weights truncated",
        ["attack", "{RUN}", "--attack", "naive_loss"],
        ("weights", "truncated"),
        "cannot load the DDPMPipeline weights",
    ),
    (
        "weights corrupt",
        ["attack", "{RUN}", "--attack", "naive_loss"],
        ("weights", "corrupt"),
        "cannot load the DDPMPipeline weights",
    ),
    (
        "unknown pipeline class",
        ["attack", "{RUN}", "--attack", "naive_loss"],
        ("weights", "unknown class"),
        "pipeline class 'FooPipeline' is not a known target kind",
    ),
    (
        "score file cut short",
        ["evaluate", "{RUN}"],
        ("scores", "cut short"),
        "2 of the run's 128 audited images have no score",
    ),
    ("score file lacks a column", ["evaluate", "{RUN}"], ("scores", "no column"), "lacks column(s) score"),
    (
        "score file without non-members",
        ["evaluate", "{RUN}"],
        ("scores", "no non-members"),
        "no non-member in the calibration half",
    ),
    ("score file truncated mid-row", ["evaluate", "{RUN}"], ("scores", "truncated"), "naive_loss.csv: "),
    (
        "--set-sizes not integers",
        ["evaluate", "{RUN}", "--set-sizes", "abc"],
        None,
        "--set-sizes: expected comma-separated integers",
    ),
    ("evaluate a missing folder", ["evaluate", "{OUT}"], None, "folder not found"),
    (
        "resume a finished run with another recipe",
        ["train", "{TINY}", "--set", "train.learning_rate=0.5", "--out", "{RUN}", "--resume"],
        None,
        "trained with a different recipe",
    ),
    (
        "attack timestep beyond the schedule",
        ["attack", "{RUN}", "--attack", "lira", "--set", "timestep=5000"],
        None,
        "timestep 5000 is beyond",
    ),
    ("bad DIFFMIA_JOBS", ["--jobs", "0", "run", "{TINY}"], None, "Invalid value for '--jobs'"),
    ("--only names no recipe", ["run", "{BENCH}", "--only", "nope"], None, "--only: "),
    (
        "a tuning value the attack refuses",
        ["run", "{BENCH}", "--set", "attacks=[{name: noise_aggregation, tune: {timestep: [20, 80]}}]"],
        None,
        "tune: timestep=20: attack noise_aggregation: T=20 - (k-1)*stride = -20 < 0",
    ),
    (
        "a tuned timestep beyond a recipe's schedule",
        ["run", "{BENCH}", "--set", "attacks=[{name: lira, tune: {timestep: [100, 5000]}}]"],
        None,
        "timestep 5000 is beyond recipe",
    ),
    (
        "attack --tune value refused",
        ["attack", "{RUN}", "--attack", "noise_aggregation", "--tune", "timestep=20,80"],
        None,
        "tune: timestep=20: attack noise_aggregation",
    ),
]


@pytest.mark.parametrize("case,argv,damage,message", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_clean_line(case, argv, damage, message, scored_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(scored_run, run)
    if damage:
        {"weights": _damage_weights, "scores": _damage_scores}[damage[0]](run, damage[1])
    (tmp_path / "file.txt").write_text("not a folder")
    (tmp_path / "empty.yaml").write_text("")
    out = tmp_path / "out"
    subst = {
        "{TINY}": str(TINY),
        "{OUT}": str(out),
        "{RUN}": str(run),
        "{FILE}": str(tmp_path / "file.txt"),
        "{EMPTY}": str(tmp_path / "empty.yaml"),
        "{BENCH}": str(TINY.parent / "tiny-benchmark.yaml"),
    }
    before = sorted(p.relative_to(run) for p in run.rglob("*"))
    result = CliRunner().invoke(app, [subst.get(a, a) for a in argv])
    assert result.exit_code == 2, (case, result.output)
    assert message in result.output, (case, result.output)
    assert "Traceback" not in result.output
    assert not out.exists(), f"{case}: wrote {out}"
    assert sorted(p.relative_to(run) for p in run.rglob("*")) == before, f"{case}: changed the run folder"


def test_timesteps_beyond_a_short_schedule_refused_by_attack_name(tmp_path):
    run = tmp_path / "short"
    result = CliRunner().invoke(
        app,
        [
            "train",
            str(TINY),
            "--set",
            "scheduler.num_train_timesteps=100",
            "--set",
            "train.gap_timesteps=[10,50]",
            "--out",
            str(run),
            "--no-progress",
        ],
    )
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(app, ["attack", str(run), "--no-progress"])  # all: naive_loss's t=200 first
    assert result.exit_code == 2 and "attack naive_loss: timestep 200 is beyond" in result.output
    assert not (run / "scores").exists()  # refused before any attack ran
    result = CliRunner().invoke(app, ["attack", str(run), "--attack", "pia", "--set", "timestep=50", "--no-progress"])
    assert result.exit_code == 0, result.output


def test_stale_temporaries_are_cleaned_and_never_read(scored_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(scored_run, run)
    stale_score = run / "scores" / ".naive_loss.csv.abc123.tmp"
    stale_score.write_text("sample_id,split\n1,")
    result = CliRunner().invoke(app, ["attack", str(run), "--attack", "naive_loss", "--no-progress"])
    assert result.exit_code == 0 and not stale_score.exists()
    assert CliRunner().invoke(app, ["evaluate", str(run), "--bootstrap", "0"]).exit_code == 0

    partial = tmp_path / "partial"
    CliRunner().invoke(
        app,
        [
            "train",
            str(TINY),
            "--out",
            str(partial),
            "--no-progress",
            "--set",
            "train.steps=10",
            "--set",
            "train.checkpoint_every=5",
        ],
    )
    stale_ckpt = partial / "checkpoints" / ".step-00000007.tmp"
    stale_ckpt.mkdir(parents=True)
    result = CliRunner().invoke(
        app,
        [
            "train",
            str(TINY),
            "--out",
            str(partial),
            "--resume",
            "--no-progress",
            "--set",
            "train.steps=12",
            "--set",
            "train.checkpoint_every=5",
        ],
    )
    assert result.exit_code == 0, result.output
    assert not stale_ckpt.exists()


def test_interrupted_training_says_where_to_resume(tmp_path, monkeypatch):
    import diffmia.targets.train as train_module

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(train_module, "train_target", interrupted)
    result = CliRunner().invoke(app, ["train", str(TINY), "--out", str(tmp_path / "r"), "--set", "train.steps=30"])
    assert result.exit_code == 130
    assert "no checkpoint was written yet" in result.output
    assert f"diffmia train {TINY} --out {tmp_path / 'r'} --resume --set 'train.steps=30'" in result.output


def test_a_full_disk_during_a_checkpoint_is_one_line_and_leaves_no_temporary(tmp_path, monkeypatch):
    from accelerate import Accelerator

    def full(self, path, *args, **kwargs):
        Path(path).mkdir(parents=True, exist_ok=True)
        (Path(path) / "model.safetensors").write_bytes(b"half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Accelerator, "save_state", full)
    out = tmp_path / "r"
    result = CliRunner().invoke(app, ["train", str(TINY), "--out", str(out), "--no-progress"])
    assert result.exit_code == 2, result.output
    assert "could not write the checkpoint (No space left on device); no complete checkpoint yet" in result.output
    assert not out.exists()  # failed before its first checkpoint: nothing left behind


def test_written_files_respect_the_umask(tmp_path):
    import os
    import stat

    from diffmia.core.io import atomic_dir, write_text

    old = os.umask(0o022)
    try:
        write_text(tmp_path / "report.md", "x")
        with atomic_dir(tmp_path / "folder") as tmp:
            (tmp / "a").write_text("y")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "report.md").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "folder").stat().st_mode) == 0o755


def test_a_full_disk_while_writing_scores_is_one_line_and_leaves_nothing(scored_run, tmp_path, monkeypatch):
    """The disk fills up half-way through a score file: one line naming the error, exit 2, no score file and no
    temporary left in the scores folder (the attack's earlier file, if any, is untouched); the journal stays."""
    import csv

    from diffmia.attacks import runner

    real_writer = csv.writer

    class FullDisk:
        def __init__(self, f):
            self.inner, self.rows = real_writer(f), 0

        def writerow(self, row):
            self.inner.writerow(row)

        def writerows(self, rows):
            self.rows += 1
            if self.rows > 1:
                raise OSError(28, "No space left on device")
            self.inner.writerows(rows)

    monkeypatch.setattr(runner.csv, "writer", FullDisk)
    out = tmp_path / "scores"
    result = CliRunner().invoke(
        app,
        ["attack", str(scored_run), "--attack", "naive_loss", "--batch-size", "16", "--out", str(out), "--no-progress"],
    )
    assert result.exit_code == 2, result.output
    assert "No space left on device" in result.output and "Traceback" not in result.output
    # neither the CSV, its JSON nor a .naive_loss.csv.*.tmp; only the owner-only journal of the finished batches,
    # from which a rerun (once there is space) resumes
    left = list(out.glob("*naive_loss*"))
    assert [p.name for p in left] == [".naive_loss.journal.jsonl"] and (left[0].stat().st_mode & 0o077) == 0
