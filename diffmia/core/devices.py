"""Per-device practice: default batch sizes and host-to-device copies. Nothing here changes a CPU run: on CPU the
defaults are the batch sizes CPU runs always used and `to_device` is a plain `.to(device)`.

- `default_batch_size(stage, device)`: images per batch of model calls when the user gives none. Only stages whose
  results do not depend on the batch are here: attack scoring (per-image seeding; a batch changes scores only in the
  last float32 bits, the README's stated tolerance). FID sampling draws each batch from its own seeded generator, so
  its batch size is part of the result and stays one configured value (`utility.batch_size`) on every device.
- `resolve_batch_size(batch_size, stage, device, image_shape)`: the given size, or the default above when None,
  scaled down for images larger than 3 x 32 x 32 (a 512 x 512 RGB image: 1 per batch on CPU, 2 on a GPU).
- `memory_batch_size(per_image, free, ...)`: on a GPU with no batch size given, the attack batch from the memory one
  image's model call takes (measured by `probe_batch_size` in the attack runner) and the memory free: half of it
  filled, rounded down to a power of two (so that a rerun on the same device picks the same size and resumes its
  journal), between 1 and 8192.
- `to_device(x, device)`: on CUDA a CPU tensor is copied through pinned (page-locked) memory without blocking the
  host, so the copy of the next batch overlaps the GPU's work; elsewhere it is `x.to(device)`.
"""

from __future__ import annotations

# images per batch of model calls, per stage and device kind; the CPU values are the ones measured and used so far
BATCH_SIZES = {
    "attack": {"cpu": 128, "cuda": 512},  # diffmia attack / audit / owner
    "matrix_attack": {"cpu": 256, "cuda": 1024},  # diffmia run (benchmark cells and their tuning)
}


def kind(device) -> str:
    """'cuda' for a CUDA device (given as a string, torch.device or None = this process's default), else 'cpu'."""
    import torch

    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    return "cuda" if torch.device(device).type == "cuda" else "cpu"


def default_batch_size(stage: str, device=None) -> int:
    if stage not in BATCH_SIZES:
        raise KeyError(f"no default batch size for stage {stage!r}; stages: {', '.join(BATCH_SIZES)}")
    return BATCH_SIZES[stage][kind(device)]


# the image size the defaults were measured at (CIFAR's 3 x 32 x 32; digits and MNIST are smaller): larger images
# get proportionally fewer per batch, so that a 512 x 512 Stable Diffusion audit does not start with 128 of them
REFERENCE_IMAGE_VALUES = 3 * 32 * 32


def resolve_batch_size(batch_size: int | None, stage: str, device=None, image_shape=None) -> int:
    """`batch_size` as given, or the stage's default on `device` when it is None, scaled down for images larger than
    3 x 32 x 32 (at least 1). A batch the device cannot hold is halved and retried by the attack runner."""
    if batch_size is not None:
        return int(batch_size)
    default = default_batch_size(stage, device)
    if image_shape is not None:
        values = 1
        for d in image_shape:
            values *= int(d)
        if values > REFERENCE_IMAGE_VALUES:
            default = max(1, default * REFERENCE_IMAGE_VALUES // values)
    return default


MEMORY_SHARE = 0.5  # of the free memory: room for what an attack keeps beside one model call (draws, its networks)
MAX_MEMORY_BATCH = 8192


def memory_batch_size(per_image: float, free: float, share: float = MEMORY_SHARE, cap: int = MAX_MEMORY_BATCH) -> int:
    """The largest power of two of images whose model calls fill `share` of `free` bytes at `per_image` bytes each."""
    if per_image <= 0:
        return cap
    fit = int(share * free // per_image)
    if fit < 1:
        return 1
    return min(cap, 1 << (fit.bit_length() - 1))


def to_device(x, device):
    """`x` on `device`; from CPU to CUDA through pinned memory, non-blocking (stream-ordered, so safe to use next)."""
    import torch

    if x.device.type == "cpu" and torch.device(device).type == "cuda":
        return x.pin_memory().to(device, non_blocking=True)
    return x.to(device)
