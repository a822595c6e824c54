import pytest
from typer.testing import CliRunner

from diffmia.cli import app
from diffmia.core.config import ConfigError, TargetConfig, apply_overrides, load_config, parse_override


def write(tmp_path, text, name="c.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_defaults_and_shipped_configs_validate(tiny_config):
    from tests.conftest import REPO

    assert tiny_config.train.steps == 20
    for path in (REPO / "configs").glob("*.yaml"):
        if path.name in {"digits-ddpm.yaml", "tiny.yaml"}:
            assert isinstance(load_config(path), TargetConfig)


def test_unknown_key_names_file_field_and_suggestion(tmp_path):
    p = write(tmp_path, "train:\n  stepz: 3\n")
    with pytest.raises(ConfigError) as err:
        load_config(p)
    msg = str(err.value)
    assert str(p) in msg and "train.stepz" in msg and "did you mean 'steps'" in msg
    assert "\n" not in msg


@pytest.mark.parametrize(
    "text, field, words",
    [
        ("train:\n  steps: many\n", "train.steps", "integer"),
        ("train:\n  steps: 0\n", "train.steps", "greater than or equal to 1"),
        ("data:\n  dataset: svhn\n", "data.dataset", "digits"),
        ("data:\n  calibration_fraction: 1.5\n", "data.calibration_fraction", "less than 1"),
        ("model:\n  norm_num_groups: 5\n", "model", "does not divide"),
        ("data:\n  dataset: cifar10\n", "data", "needs data.path"),
    ],
)
def test_bad_values_are_one_line_errors(tmp_path, text, field, words):
    p = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_config(p)
    msg = str(err.value)
    assert msg.startswith(f"{p}: {field}") and words in msg


def test_not_yaml_and_not_a_mapping_and_missing(tmp_path):
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write(tmp_path, "train: [1, 2\n"))
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_config(write(tmp_path, "- 1\n- 2\n"))
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "absent.yaml")


def test_overrides():
    assert parse_override("train.steps=20") == (["train", "steps"], 20)
    assert parse_override("model.attention=[true, false]") == (["model", "attention"], [True, False])
    data = apply_overrides({"train": {"steps": 5}}, ["train.steps=7", "data.members=10"])
    assert data == {"train": {"steps": 7}, "data": {"members": 10}}
    with pytest.raises(ConfigError, match="expected dotted.key=value"):
        parse_override("train.steps")
    with pytest.raises(ConfigError, match="is not a section"):
        apply_overrides({"seed": 1}, ["seed.x=2"])


def test_cli_bad_config_exits_2_with_one_line(tmp_path):
    from tests.conftest import TINY

    result = CliRunner().invoke(app, ["data", str(TINY), "--out", str(tmp_path), "--set", "data.memberz=3"])
    assert result.exit_code == 2
    assert "data.memberz: unknown key (did you mean 'members'?)" in result.output
