import json

import torch
from safetensors.torch import load_file

from diffmia.core.config import load_config
from diffmia.core.rundir import RunDir
from diffmia.targets.runs import load_run
from diffmia.targets.target import PixelDDPMTarget
from diffmia.targets.train import TrainingError, train_target
from tests.conftest import TINY


def test_twenty_step_run_writes_everything(tmp_path, tiny_config):
    run = train_target(tiny_config, tmp_path / "run", progress=False)
    assert run.is_trained()
    assert (run.target / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    assert not list(run.target.rglob("*.bin"))
    log = [json.loads(line) for line in run.train_log.read_text().splitlines()]
    assert [r["step"] for r in log] == [5, 10, 15, 20] and all(r["loss"] > 0 for r in log)
    summary = json.loads(run.summary.read_text())
    assert set(summary["gap"]) == {"10", "50", "100", "200", "500"}
    assert (run.root / "config.yaml").is_file() and (run.root / "manifest.json").is_file()
    assert not list(run.root.rglob("*.tmp"))


def test_resume_reaches_the_same_weights(tmp_path):
    cfg = load_config(TINY, ["train.steps=24", "train.checkpoint_every=8"])
    train_target(cfg, tmp_path / "straight", progress=False)
    train_target(cfg, tmp_path / "killed", progress=False, stop_after=13)  # killed after step 13, checkpoint at 8
    assert not RunDir(tmp_path / "killed").is_trained()
    train_target(cfg, tmp_path / "killed", progress=False, resume=True)
    a = load_file(tmp_path / "straight/target/unet/diffusion_pytorch_model.safetensors")
    b = load_file(tmp_path / "killed/target/unet/diffusion_pytorch_model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    steps = [json.loads(x)["step"] for x in (tmp_path / "killed/train_log.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps))  # replayed steps are not logged twice


def test_refuses_to_overwrite_or_resume_another_recipe(tmp_path, tiny_config):
    train_target(tiny_config, tmp_path / "run", progress=False, stop_after=3)
    try:
        train_target(tiny_config, tmp_path / "run", progress=False)
        raise AssertionError("expected a refusal")
    except TrainingError as exc:
        assert "--resume" in str(exc)
    other = load_config(TINY, ["train.learning_rate=0.01"])
    try:
        train_target(other, tmp_path / "run", progress=False, resume=True)
        raise AssertionError("expected a refusal")
    except TrainingError as exc:
        assert "differs" in str(exc)


def test_target_save_load_round_trip(tiny_run, tmp_path):
    loaded = load_run(tiny_run)
    x = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    before = loaded.target.predict_noise(x, 50)
    loaded.target.unet.save_pretrained(tmp_path / "copy" / "unet")
    loaded.target.noise_scheduler.save_pretrained(tmp_path / "copy" / "scheduler")
    (tmp_path / "copy" / "model_index.json").write_text((tiny_run / "target" / "model_index.json").read_text())
    again = PixelDDPMTarget.from_folder(tmp_path / "copy")
    assert torch.equal(before, again.predict_noise(x, 50))
    assert loaded.target.queries.sample_queries == 4


def test_members_fit_better_than_nonmembers(tiny_run):
    gap = json.loads((tiny_run / "summary.json").read_text())["gap"]
    assert gap["100"]["members"] < gap["100"]["nonmembers_test"] * 1.05  # tiny model, 200 steps: at least no worse
