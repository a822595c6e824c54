"""An attack killed with SIGKILL in the middle resumes from its journal: the resumed score file is bit-identical to an
uninterrupted one (single-model and reference-model attacks), the run says how many rows it reused, and a changed
attack config never reuses them."""

import json
import os
import subprocess
import sys

import pytest

from diffmia.attacks import build_attack
from diffmia.attacks.runner import run_attack
from diffmia.core.logs import captured
from diffmia.targets.runs import load_run

KILLED = """
import json, os, signal, sys
from diffmia.attacks import build_attack
from diffmia.attacks.runner import run_attack
from diffmia.targets.runs import load_run

run, name, params, seed, out, kill_after = sys.argv[1:]
attack = build_attack(name, json.loads(params), seed=int(seed))
score, calls = attack.score, [0]

def killed_after(target, batch):
    if calls[0] == int(kill_after):
        os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, no flush: as a machine that dies
    calls[0] += 1
    return score(target, batch)

attack.score = killed_after
run_attack(load_run(run), attack, out, batch_size=8, progress=False)
"""


def _kill_midway(run, name, params, seed, out, kill_after=3):
    done = subprocess.run(
        [sys.executable, "-c", KILLED, str(run), name, json.dumps(params), str(seed), str(out), str(kill_after)],
        env=os.environ.copy(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == -9, done.stderr[-2000:]
    journal = out / f".{name}.journal.jsonl"
    assert journal.is_file() and not (out / f"{name}.csv").exists()
    return journal


@pytest.mark.parametrize(
    "name, params",
    [("secmi", {}), ("lira", {"references": 2, "draws": 1})],
    ids=["single-model", "reference-model"],
)
def test_a_killed_attack_resumes_bit_identical(short_run, tmp_path, name, params):
    loaded = load_run(short_run)
    whole = run_attack(loaded, build_attack(name, params, seed=0), tmp_path / "whole", batch_size=8, progress=False)
    assert whole.info["resumed_rows"] == 0 and not (tmp_path / "whole" / f".{name}.journal.jsonl").exists()
    journal = _kill_midway(short_run, name, params, 0, tmp_path / "killed")
    assert len(journal.read_text().splitlines()) == 1 + 3  # the key, then the three batches finished before the kill
    with captured() as logs:
        resumed = run_attack(
            loaded, build_attack(name, params, seed=0), tmp_path / "killed", batch_size=8, progress=False
        )
    assert resumed.info["resumed_rows"] == 24
    assert any("resuming a killed run: 24 scored rows reused" in line for line in logs)
    assert (tmp_path / "killed" / f"{name}.csv").read_bytes() == whole.csv_path.read_bytes()
    assert not journal.exists()  # complete: nothing left to resume


def test_a_changed_attack_config_never_reuses_rows(short_run, tmp_path):
    loaded = load_run(short_run)
    _kill_midway(short_run, "secmi", {}, 0, tmp_path)
    with captured() as logs:
        result = run_attack(loaded, build_attack("secmi", {}, seed=1), tmp_path, batch_size=8, progress=False)
    assert result.info["resumed_rows"] == 0 and any("not reused" in line for line in logs)
    fresh = run_attack(loaded, build_attack("secmi", {}, seed=1), tmp_path / "fresh", batch_size=8, progress=False)
    assert result.csv_path.read_bytes() == fresh.csv_path.read_bytes()


def test_a_torn_last_batch_is_scored_again(short_run, tmp_path):
    loaded = load_run(short_run)
    journal = _kill_midway(short_run, "naive_loss", {}, 0, tmp_path)
    text = journal.read_text()
    journal.write_text(text[: len(text) - 40])  # the kill landed inside the write of the last batch
    result = run_attack(loaded, build_attack("naive_loss", {}, seed=0), tmp_path, batch_size=8, progress=False)
    fresh = run_attack(loaded, build_attack("naive_loss", {}, seed=0), tmp_path / "f", batch_size=8, progress=False)
    assert result.info["resumed_rows"] == 16 and result.csv_path.read_bytes() == fresh.csv_path.read_bytes()


def test_an_out_of_memory_batch_is_halved_and_retried(short_run, tmp_path):
    """A device that holds only 2 images at once: the batch of 8 is halved until it fits (said in the log), and the
    scores are those of a run at batch size 2."""
    import torch

    loaded = load_run(short_run)
    attack = build_attack("pia", {}, seed=0)
    score = attack.score

    def small_device(target, batch):
        if len(batch.ids) > 2:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return score(target, batch)

    attack.score = small_device
    with captured() as logs:
        halved = run_attack(loaded, attack, tmp_path / "halved", batch_size=8, progress=False)
    assert sum("out of memory with 8 images" in line and "halved to 4" in line for line in logs) == 1
    assert sum("halved to 2" in line for line in logs) == 1  # remembered: later batches start at 2
    small = run_attack(loaded, build_attack("pia", {}, seed=0), tmp_path / "small", batch_size=2, progress=False)
    assert halved.csv_path.read_bytes() == small.csv_path.read_bytes()
