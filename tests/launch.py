"""Run the CLI under torchrun (2 gloo processes on CPU) and, if the launch fails, say what each worker printed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def torchrun(
    args: list[str], log_dir: Path, processes: int = 2, timeout: float = 300, env: dict | None = None
) -> subprocess.CompletedProcess:
    """`python -m torch.distributed.run ... -m diffmia ARGS`; every worker's stdout and stderr are also written under
    log_dir, so an assertion can show the worker that failed (torchrun's own stderr only names the signal). A launch
    still running after `timeout` seconds (a collective that never completes) is killed with its workers and
    returns exit code -9, so a hang fails the test instead of stalling the suite. One torch thread per process
    (DIFFMIA_THREADS=1: N processes x all cores would oversubscribe CI's 2 cores; compare with a one-process run at
    1 thread too). `env`: variables added for the launch."""
    import signal

    env = {**os.environ, "OMP_NUM_THREADS": "1", "DIFFMIA_THREADS": "1", **(env or {})}
    launch = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        str(processes),
        "--standalone",
        "--log-dir",
        str(log_dir),
        "--tee",
        "3",
        "-m",
        "diffmia",
        *args,
    ]
    proc = subprocess.Popen(
        launch, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        out, err = proc.communicate(timeout=timeout)
        code = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        code, err = -9, err + f"\n(killed after {timeout:.0f} s: a hang)"
    return subprocess.CompletedProcess(launch, code, out, err)


def worker_logs(done: subprocess.CompletedProcess, log_dir: Path) -> str:
    """torchrun's stderr tail, then the tail of each worker's log file."""
    parts = [f"torchrun exit {done.returncode}; stderr tail:\n{done.stderr[-1500:]}"]
    for log in sorted(Path(log_dir).rglob("*.log")):
        text = log.read_text(errors="replace")
        if text.strip():
            parts.append(f"--- {log.relative_to(log_dir)}:\n{text[-1500:]}")
    return "\n".join(parts)
