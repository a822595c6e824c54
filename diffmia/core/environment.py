"""The environment a result came from: package versions, torch threads, CPU capability, device.

Recorded in every results.json, report and score file's JSON, because scores are bit-reproducible only on the same
hardware class and packages: float32 sums change with the SIMD kernels torch picks (AVX2 vs AVX-512), the thread
count and library versions, and a threshold at 1% FPR can move by one image on such a change.
"""

from __future__ import annotations

import platform
from importlib import metadata

PACKAGES = (
    "diffmia",
    "torch",
    "diffusers",
    "accelerate",
    "opacus",
    "peft",
    "transformers",
    "numpy",
    "scikit-learn",
    "pandas",
    "scipy",
    "mlxtend",
)


def environment() -> dict:
    import torch

    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    try:
        capability = torch.backends.cpu.get_cpu_capability()
    except AttributeError:  # older torch
        capability = None
    from diffmia.core import parallel

    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_capability": capability,
        "usable_cpus": parallel.usable_cpus(),
        "torch_threads": torch.get_num_threads(),
        "jobs": parallel.jobs(),
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "packages": versions,
    }


def describe(env: dict) -> str:
    """One line for reports: the facts that decide bit-reproducibility."""
    p = env.get("packages", {})
    return (
        f"{env.get('device')} ({env.get('cpu_capability')}, {env.get('torch_threads')} torch threads), "
        f"python {env.get('python')}, torch {p.get('torch')}, diffusers {p.get('diffusers')}, "
        f"opacus {p.get('opacus')}, numpy {p.get('numpy')}, scikit-learn {p.get('scikit-learn')}"
    )
