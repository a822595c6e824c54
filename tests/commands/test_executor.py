"""Claims shared by several workers on one results folder, and the matrix as submitit jobs (local executor)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pandas as pd

from diffmia.core.claims import claim, is_stale
from tests.conftest import REPO
from tests.launch import torchrun, worker_logs


def test_a_claim_is_exclusive_and_released(tmp_path):
    path = tmp_path / "claims" / "r.claim"
    with claim(path) as first:
        assert first and path.is_file()
        with claim(path) as second:
            assert second is False  # a live holder: the other worker leaves the recipe alone
    assert not path.exists()


def test_a_dead_workers_claim_expires(tmp_path):
    path = tmp_path / "r.claim"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    path.write_text(json.dumps({"host": os.uname().nodename, "pid": dead.pid, "since": time.time()}))
    assert is_stale(path)
    with claim(path) as mine:
        assert mine and json.loads(path.read_text())["pid"] == os.getpid()
    old = tmp_path / "old.claim"  # another host's claim whose heartbeat stopped
    old.write_text(json.dumps({"host": "elsewhere", "pid": 1, "since": 0}))
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    assert is_stale(old, ttl=600) and not is_stale(path)


def test_heartbeat_keeps_a_long_claim_fresh(tmp_path):
    path = tmp_path / "r.claim"
    with claim(path, heartbeat=0.05) as mine:
        assert mine
        os.utime(path, (time.time() - 1000, time.time() - 1000))
        time.sleep(0.3)
        assert time.time() - path.stat().st_mtime < 5 and not is_stale(path, ttl=600)


def test_matrix_as_local_executor_jobs_equals_inline(tmp_path):
    bench = str(REPO / "configs" / "tiny-benchmark.yaml")
    common = ["--set", "utility.enabled=false", "--no-progress"]
    env = dict(
        os.environ, OMP_NUM_THREADS="1", DIFFMIA_THREADS="1"
    )  # the same thread count in both (float sums depend on it)
    subprocess.run(
        [sys.executable, "-m", "diffmia", "run", bench, "--out", str(tmp_path / "inline"), *common],
        env=env,
        check=True,
        capture_output=True,
    )
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "diffmia",
            "run",
            bench,
            "--out",
            str(tmp_path / "jobs"),
            "--executor",
            "local",
            *common,
        ],
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert done.stdout.count("submitted as job") == 2 and "collecting the cached cells" in done.stdout
    timing = ["attack_seconds", "train_seconds", "reference_seconds"]
    a = pd.read_csv(tmp_path / "inline" / "results.csv").drop(columns=timing)
    b = pd.read_csv(tmp_path / "jobs" / "results.csv").drop(columns=timing)
    pd.testing.assert_frame_equal(a, b)
    assert not list((tmp_path / "jobs" / "claims").glob("*.claim"))


def test_dp_sgd_over_two_processes_keeps_the_accountants_epsilon(tmp_path):
    """opacus' distributed DP-SGD under torchrun (2 gloo processes): each samples its share of the rows at rate q,
    the main process alone adds the noise; the accountant's epsilon equals one process's, the loss curve is alike."""
    env = dict(os.environ, OMP_NUM_THREADS="1", DIFFMIA_THREADS="1")
    args = [
        "-m",
        "diffmia",
        "train",
        str(REPO / "configs" / "tiny.yaml"),
        "--set",
        "defenses=[{name: dp_sgd, epsilon: 10}]",
        "--set",
        "train.steps=20",
        "--no-progress",
    ]
    subprocess.run([sys.executable, *args, "--out", str(tmp_path / "one")], env=env, check=True, capture_output=True)
    done = torchrun([*args[2:], "--out", str(tmp_path / "two")], tmp_path / "logs")
    assert done.returncode == 0, worker_logs(done, tmp_path / "logs")
    one, two = (json.loads((tmp_path / d / "summary.json").read_text()) for d in ("one", "two"))
    assert two["dp_epsilon"] == one["dp_epsilon"] and 9.5 < one["dp_epsilon"] <= 10.0
    assert two["defenses"][0]["processes"] == 2 and one["defenses"][0]["processes"] == 1
    losses = [
        [json.loads(x)["loss"] for x in (tmp_path / d / "train_log.jsonl").read_text().splitlines()]
        for d in ("one", "two")
    ]
    assert losses[1][-1] < losses[1][0] and abs(losses[1][-1] - losses[0][-1]) < 0.25 * losses[0][-1]
    assert done.stdout.count("target:") == 1  # one process reports
