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
    result = runner.invoke(app, ["train", str(TINY), "--out", str(tmp_path / "r"), "--set", "train.steps=6", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "non-members" in result.output
    result = runner.invoke(app, ["sample", str(tmp_path / "r"), "--n", "9", "--steps", "4", "--out", str(tmp_path / "g.png")])
    assert result.exit_code == 0, result.output
    from PIL import Image

    assert Image.open(tmp_path / "g.png").size[0] > 8


def test_missing_run_is_a_clear_error(tmp_path):
    result = CliRunner().invoke(app, ["sample", str(tmp_path / "nothing")])
    assert result.exit_code == 2 and "run directory not found" in result.output
