"""Recipes trained by the team's own command (targets/command.py): a training script the test ships (plain PyTorch +
diffusers, its own loop) trains the audited model and, through `diffmia audit --train-command`, LiRA's references;
LiRA then finds the members about as well as with references from diffmia's own loop on the same recipe. A failed
command names its log, cached references are not trained again, and a reference of another architecture is refused
naming the difference."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from diffmia.cli import app
from tests.commands.test_audit import elsewhere  # noqa: F401 - the fixture

SCRIPT = Path(__file__).with_name("train_script.py")
COMMAND = f"{shlex.quote(sys.executable)} {shlex.quote(str(SCRIPT))} --train_data_dir {{data}} --output_dir {{out}} --seed {{seed}}"
# configs/tiny.yaml's architecture with the script's loop: 200 steps of batch 16 at lr 2e-3, clipped, no EMA
SAME_RECIPE = """name: own-loop
seed: 0
data: {dataset: digits}
model: {block_out_channels: [8, 16], attention: [false, true], norm_num_groups: 4}
train: {steps: 200, batch_size: 16, learning_rate: 0.002, warmup_steps: 0, use_ema: false, checkpoint_every: 200}
"""


@pytest.fixture(scope="module")
def team_model(elsewhere, tmp_path_factory):  # noqa: F811
    """The audited model, trained on the members by the team's script (not by diffmia)."""
    out = tmp_path_factory.mktemp("team") / "model"
    subprocess.run(
        [sys.executable, str(SCRIPT), "--train_data_dir", str(elsewhere / "members"), "--output_dir", str(out)],
        check=True,
        capture_output=True,
    )
    return out


def audit(elsewhere, model, out, *extra, references: int = 2):  # noqa: F811
    args = ["audit", str(model), "--members", str(elsewhere / "members"), "--nonmembers", str(elsewhere / "nonmembers")]
    args += ["--attack", "lira", "--set", f"lira.references={references}", "--bootstrap", "200", "--no-progress"]
    args += ["--out", str(out)]
    return CliRunner().invoke(app, [*args, *extra])


def test_references_trained_by_the_teams_command(elsewhere, team_model, tmp_path):  # noqa: F811
    result = audit(elsewhere, team_model, tmp_path / "command", "--train-command", COMMAND)
    assert result.exit_code == 0, result.output
    results = json.loads((tmp_path / "command" / "results.json").read_text())
    row = results["rows"][0]
    assert row["attack"] == "lira" and row["references"] == 2
    info = results["recipes"]["model"]
    assert info["recipe_from"] == f"command: {COMMAND}"
    folders = json.loads((tmp_path / "command" / "model" / "scores" / "lira.json").read_text())["references"]["folders"]
    for folder in map(Path, folders):  # each reference: the command's record and output kept, no member image left
        record = json.loads((folder / "command.json").read_text())
        assert record["exit_code"] == 0 and "--train_data_dir" in record["command"]
        assert "64 images of (1, 8, 8)" in (folder / "command.log").read_text()
        assert (folder / "target" / "model_index.json").is_file() and not (folder / "train-data").exists()

    recipe = tmp_path / "same-recipe.yaml"
    recipe.write_text(SAME_RECIPE)
    own = audit(elsewhere, team_model, tmp_path / "own", "--recipe", str(recipe))
    assert own.exit_code == 0, own.output
    own_row = json.loads((tmp_path / "own" / "results.json").read_text())["rows"][0]
    print(f"LiRA AUC, references by the team's command {row['auc']:.3f}; by diffmia's loop {own_row['auc']:.3f}")
    assert row["auc"] > 0.6 and own_row["auc"] > 0.6
    assert abs(row["auc"] - own_row["auc"]) < 0.12, (row["auc"], own_row["auc"])

    # a rerun trains nothing: the references come from the cache (the command is not run again)
    stamps = [(Path(f) / "command.json").stat().st_mtime_ns for f in folders]
    again = audit(elsewhere, team_model, tmp_path / "again", "--train-command", COMMAND)
    assert again.exit_code == 0, again.output
    assert [(Path(f) / "command.json").stat().st_mtime_ns for f in folders] == stamps


def test_the_cache_key_follows_the_commands_variables(monkeypatch):
    from diffmia.core.config import TargetConfig
    from diffmia.targets.command import command_key, env_names

    cfg = TargetConfig.model_validate({"command": {"run": COMMAND + " --lr $TEAM_LR", "env": ["HF_HOME"]}})
    assert env_names(cfg) == ["HF_HOME", "TEAM_LR"]
    monkeypatch.setenv("TEAM_LR", "0.002")
    first = command_key(cfg)
    assert command_key(cfg) == first
    monkeypatch.setenv("TEAM_LR", "0.001")
    second = command_key(cfg)
    monkeypatch.setenv("HF_HOME", "/elsewhere")
    assert len({first, second, command_key(cfg)}) == 3


def test_a_failed_command_names_its_log(elsewhere, team_model, tmp_path):  # noqa: F811
    result = audit(elsewhere, team_model, tmp_path / "fail", "--train-command", COMMAND + " --fail")
    assert result.exit_code == 2
    assert "the training command failed (exit code 1)" in result.output and "command.log" in result.output
    assert "out of GPU memory (pretend)" in result.output
    log = Path(result.output.split("its output is in ")[1].split(":")[0].strip())
    assert log.is_file() and "out of GPU memory" in log.read_text()
    assert not (log.parent / "train-data").exists()  # the member images written for it are gone


def test_a_reference_of_another_architecture_is_refused(elsewhere, team_model, tmp_path):  # noqa: F811
    result = audit(elsewhere, team_model, tmp_path / "wide", "--train-command", COMMAND + " --width 12 --steps 2")
    assert result.exit_code == 2
    assert "differs from the audited model" in result.output and "block_out_channels" in result.output


def test_a_command_must_name_its_data_and_output(elsewhere, team_model, tmp_path):  # noqa: F811
    result = audit(elsewhere, team_model, tmp_path / "x", "--train-command", "python train.py")
    assert result.exit_code == 2 and "{data}" in result.output and not (tmp_path / "x").exists()


def test_a_benchmark_recipe_trained_by_its_command(tmp_path):
    """`command:` in a benchmark recipe: the target itself is trained by the command, then attacked as any run."""
    from diffmia.matrix import load_benchmark, run_matrix
    from tests.conftest import REPO

    quoted = (COMMAND + " --steps 2").replace("'", "''")
    (tmp_path / "bench.yaml").write_text(
        "name: command-bench\n"
        f"recipes:\n  - name: team\n    config: {REPO / 'configs' / 'tiny.yaml'}\n"
        f"    set: [\"command.run='{quoted}'\"]\n"
        "attacks:\n  - name: naive_loss\n"
        "utility: {samples: 16, sample_steps: 2, classifier_epochs: 1}\nevaluation: {bootstrap: 20}\n"
    )
    bench, recipes = load_benchmark(tmp_path / "bench.yaml")
    results = run_matrix(bench, recipes, tmp_path / "out", progress=False)
    run = tmp_path / "out" / results["recipes"]["team"]["run_dir"]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["trained_by"] == "command" and summary["output"] == "pipeline" and summary["images"] == 64
    assert json.loads((run / "command.json").read_text())["exit_code"] == 0
    assert [r["attack"] for r in results["rows"]] == ["naive_loss"]


def test_lora_references_on_the_audited_base(elsewhere, team_model, tmp_path):  # noqa: F811
    """A LoRA recipe: the audited model is base + LoRA (--adapter), and each reference is a LoRA the command trains on
    the same base, recorded beside it and merged whenever it is loaded."""
    from peft import LoraConfig, get_peft_model

    from diffmia.targets.kinds import load_target

    lora = tmp_path / "lora"  # the audited LoRA, untrained (zero B: the base itself); the path is what is tested
    unet = get_peft_model(load_target(team_model).unet, LoraConfig(r=4, target_modules=["to_q", "to_k", "to_v"]))
    unet.save_pretrained(lora)
    command = COMMAND + f" --lora_base {shlex.quote(str(team_model))} --steps 20"
    result = audit(elsewhere, team_model, tmp_path / "out", "--adapter", str(lora), "--train-command", command)
    assert result.exit_code == 0, result.output
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["recipes"]["model"]["adapter_format"] == "peft"
    folders = json.loads((tmp_path / "out" / "model" / "scores" / "lira.json").read_text())["references"]["folders"]
    for folder in map(Path, folders):
        mark = json.loads((folder / "target" / "diffmia-adapter.json").read_text())
        assert mark["base"] == str(team_model.resolve()) and (folder / "target" / "adapter_config.json").is_file()
        assert json.loads((folder / "summary.json").read_text())["output"] == "lora"
    assert results["rows"][0]["references"] == 2


def test_a_lora_without_a_base_is_refused(tmp_path):
    from diffmia.core.config import TargetConfig
    from diffmia.targets.command import CommandFailed, adopt_output

    out = tmp_path / "command-out"
    out.mkdir()
    (out / "adapter_config.json").write_text("{}")
    cfg = TargetConfig.model_validate({"command": {"run": COMMAND}})  # no base: where would the LoRA go?
    with pytest.raises(CommandFailed, match="saved a LoRA, not a pipeline"):
        adopt_output(cfg, out, tmp_path / "target")
    (out / "adapter_config.json").unlink()
    with pytest.raises(CommandFailed, match="neither a diffusers pipeline"):
        adopt_output(cfg, out, tmp_path / "target")
