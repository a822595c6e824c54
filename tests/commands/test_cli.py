from typer.testing import CliRunner

from diffmia.cli import app
from tests.conftest import TINY


def test_help_lists_every_option():
    runner = CliRunner()
    for command in ("train", "sample", "data"):
        result = runner.invoke(app, [command, "--help"])
        assert result.exit_code == 0 and "--out" in result.output


def test_data_train_sample(tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["data", str(TINY), "--out", str(tmp_path / "d")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "d" / "manifest.json").is_file() and (tmp_path / "d" / "members.png").is_file()
    result = runner.invoke(
        app, ["train", str(TINY), "--out", str(tmp_path / "r"), "--set", "train.steps=6", "--no-progress"]
    )
    assert result.exit_code == 0, result.output
    assert "non-members" in result.output
    result = runner.invoke(
        app, ["sample", str(tmp_path / "r"), "--n", "9", "--steps", "4", "--out", str(tmp_path / "g.png")]
    )
    assert result.exit_code == 0, result.output
    from PIL import Image

    assert Image.open(tmp_path / "g.png").size[0] > 8


def test_missing_run_is_a_clear_error(tmp_path):
    result = CliRunner().invoke(app, ["sample", str(tmp_path / "nothing")])
    assert result.exit_code == 2 and "run directory not found" in result.output


def test_attack_tune_and_evaluate_one_run(tmp_path):
    """`--tune` chooses on the calibration split and records the candidates; `evaluate` prints the one-run epsilon of
    a run with canaries."""
    import json

    runner = CliRunner()
    run = tmp_path / "run"
    ok = runner.invoke(
        app,
        [
            "train",
            str(TINY),
            "--out",
            str(run),
            "--set",
            "train.steps=30",
            "--set",
            "data.canaries=20",
            "--no-progress",
        ],
    )
    assert ok.exit_code == 0, ok.output
    tuned = runner.invoke(
        app, ["attack", str(run), "--attack", "naive_loss", "--tune", "timestep=50,200", "--no-progress"]
    )
    assert tuned.exit_code == 0, tuned.output
    assert "chosen on the calibration split" in tuned.output
    info = json.loads((run / "scores" / "naive_loss.json").read_text())
    assert info["tuned"]["chosen"]["timestep"] in (50, 200) and len(info["tuned"]["candidates"]) == 2
    assert info["params"]["timestep"] == info["tuned"]["chosen"]["timestep"]
    shown = runner.invoke(app, ["evaluate", str(run), "--bootstrap", "10"])
    assert shown.exit_code == 0, shown.output
    assert "eps 1-run" in shown.output
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["naive_loss"]["one_run_audit"]["canaries"] == 20
    refused = runner.invoke(app, ["attack", str(run), "--tune", "timestep=50,200"])
    assert refused.exit_code == 2 and "name it with --attack" in refused.output


def test_attack_help_lists_every_registered_attack():
    from diffmia.attacks import ATTACKS

    result = CliRunner().invoke(app, ["attack", "--help"], env={"COLUMNS": "400"})
    assert all(name in result.output for name in ATTACKS.names())
    assert CliRunner().invoke(app, ["--version"]).output.startswith("diffmia ")
