"""Attack batch sizes from a GPU's free memory (diffmia.core.devices.memory_batch_size, runner.probe_batch_size).
No GPU here: the probe runs against a stand-in target and torch.cuda's memory counters replaced by known numbers."""

from __future__ import annotations

import torch

from diffmia.attacks.runner import probe_batch_size
from diffmia.core.devices import memory_batch_size

MiB, GiB = 2**20, 2**30


def test_half_the_free_memory_rounded_down_to_a_power_of_two():
    assert memory_batch_size(50 * MiB, 10 * GiB) == 64  # 0.5 * 10240 / 50 = 102.4 -> 64
    assert memory_batch_size(1 * MiB, 80 * GiB) == 8192  # capped
    assert memory_batch_size(3 * GiB, 4 * GiB) == 1  # not even one image: 1 (the runner halves no further)
    assert memory_batch_size(0, GiB) == 8192


class StandIn:
    """What the probe reads of a target, on 'cuda', its one model call allocating 50 MiB per image."""

    device = torch.device("cuda")
    conditional = True
    sample_shape = (4, 8, 8)
    num_train_timesteps = 1000

    def __init__(self, memory):
        self.memory = memory
        self.calls = []

    def predict_noise(self, x, t, captions):
        self.calls.append((tuple(x.shape), t, captions))
        self.memory["peak"] = self.memory["allocated"] + len(x) * 50 * MiB
        return x


def test_the_probe_measures_one_call_and_sizes_the_batch(monkeypatch):
    memory = {"allocated": 3 * GiB, "peak": 0}
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: None)
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device=None: memory.update(peak=0))
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: memory["allocated"])
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: memory["peak"])
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (10 * GiB, 80 * GiB))
    target = StandIn(memory)
    assert probe_batch_size(target) == 64
    assert target.calls == [((2, 4, 8, 8), 500, ["", ""])]


def test_a_target_without_noise_predictions_keeps_the_defaults(monkeypatch):
    from diffmia.targets.flow import FlowMatchingError

    class Flow(StandIn):
        flow_matching = True  # as targets/flow.py's FlowMatchTarget says of itself

        def predict_noise(self, *args):
            raise FlowMatchingError("flow-matching")

    for name in ("synchronize", "reset_peak_memory_stats"):
        monkeypatch.setattr(torch.cuda, name, lambda device=None: None)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: 0)
    assert probe_batch_size(Flow({"allocated": 0, "peak": 0})) is None
