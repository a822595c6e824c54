"""Per-device defaults and copies (diffmia/core/devices.py): nothing of them may change a CPU run."""

import pytest
import torch

from diffmia.core.devices import BATCH_SIZES, default_batch_size, kind, resolve_batch_size, to_device


def test_cpu_defaults_are_the_batch_sizes_cpu_runs_always_used():
    assert default_batch_size("attack", "cpu") == 128
    assert default_batch_size("matrix_attack", torch.device("cpu")) == 256
    assert kind("cuda:1") == "cuda" and kind(torch.device("cpu")) == "cpu"
    assert all(sizes["cuda"] >= sizes["cpu"] for sizes in BATCH_SIZES.values())
    with pytest.raises(KeyError, match="stages: attack"):
        default_batch_size("fid_sampling", "cpu")  # its batch size is part of the result: never per device
    assert resolve_batch_size(None, "attack", "cpu") == 128 and resolve_batch_size(7, "attack", "cpu") == 7
    # digits and CIFAR keep the measured defaults; a 512 x 512 RGB image gets 1 per batch on CPU, 2 on a GPU
    assert resolve_batch_size(None, "attack", "cpu", (1, 8, 8)) == 128
    assert resolve_batch_size(None, "matrix_attack", "cpu", (3, 32, 32)) == 256
    assert resolve_batch_size(None, "attack", "cpu", (3, 512, 512)) == 1
    assert resolve_batch_size(None, "attack", "cuda", (3, 512, 512)) == 2
    assert resolve_batch_size(5, "attack", "cpu", (3, 512, 512)) == 5


def test_to_device_on_cpu_is_a_plain_copy_free_move():
    x = torch.randn(3, 1, 8, 8)
    assert to_device(x, "cpu") is x  # .to() of a tensor already there returns it


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_to_device_on_cuda_goes_through_pinned_memory_and_keeps_values():
    x = torch.randn(64, 3, 32, 32)
    y = to_device(x, "cuda")
    assert y.device.type == "cuda" and torch.equal(y.cpu(), x)
