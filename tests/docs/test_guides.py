"""The guides' code, run: docs/guides/adding-an-attack.md and adding-a-defense.md, installed as the plugin packages
they describe (their Python block as the module, their pyproject's entry points as the distribution's)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

try:  # Python 3.11+
    import tomllib
except ImportError:  # Python 3.10: the same parser, as a package
    import tomli as tomllib

import pytest
from typer.testing import CliRunner

from diffmia.cli import app
from diffmia.targets.runs import load_run
from tests.attacks.test_contract import check_attack_contract
from tests.conftest import REPO
from tests.defenses.test_contract import check_defense_contract
from tests.plugins import install_plugin

GUIDES = REPO / "docs" / "guides"


def blocks(page: Path, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", page.read_text(), flags=re.S)


def install_guide(page: Path, tmp_path: Path, monkeypatch, group: str):
    """The page's first Python block as the module its entry point names; returns (entry-point name, undo)."""
    project = tomllib.loads(blocks(page, "toml")[0])["project"]
    ((name, target),) = project["entry-points"][group].items()
    module = target.split(":")[0]
    undo = install_plugin(
        tmp_path / "site",
        monkeypatch,
        project["name"],
        {module.replace(".", "/") + ".py": blocks(page, "python")[0]},
        {group: {name: target}},
    )
    return name, undo


@pytest.fixture
def attack_plugin(tmp_path, monkeypatch):
    name, undo = install_guide(GUIDES / "adding-an-attack.md", tmp_path, monkeypatch, "diffmia.attacks")
    yield name
    undo()


@pytest.fixture
def defense_plugin(tmp_path, monkeypatch):
    name, undo = install_guide(GUIDES / "adding-a-defense.md", tmp_path, monkeypatch, "diffmia.defenses")
    yield name
    undo()


def test_attack_guide_plugin_runs_everywhere_attacks_are_named(attack_plugin, short_run, tmp_path):
    from diffmia.attacks import ATTACKS

    assert attack_plugin == "multi_step_loss" and attack_plugin in ATTACKS.names()
    check_attack_contract(load_run(short_run), attack_plugin, {"timesteps": [50, 200]})
    runner = CliRunner()
    env = {
        **os.environ,
        "PYTHONPATH": str(tmp_path / "site"),
        "COLUMNS": "400",
    }  # a fresh process, as after pip install
    help_ = subprocess.run(
        [sys.executable, "-m", "diffmia", "attack", "--help"], env=env, capture_output=True, text=True
    )
    assert help_.returncode == 0 and attack_plugin in help_.stdout, help_.stderr
    result = runner.invoke(
        app, ["attack", str(short_run), "--attack", attack_plugin, "--set", "timesteps=[50,200]", "--no-progress"]
    )
    assert result.exit_code == 0, result.output
    assert (short_run / "scores" / f"{attack_plugin}.csv").is_file()
    typo = runner.invoke(app, ["attack", str(short_run), "--attack", "multi_step_los", "--no-progress"])
    assert typo.exit_code == 2 and "did you mean 'multi_step_loss'" in typo.output


def test_defense_guide_plugin_trains_through_the_contract(defense_plugin, tmp_path):
    from diffmia.defenses import DEFENSES

    assert defense_plugin == "random_flip" and defense_plugin in DEFENSES.names()
    check_defense_contract(tmp_path, defense_plugin, {"p": 0.5})
