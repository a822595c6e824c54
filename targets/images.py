"""Save a batch of images in [-1, 1] as one PNG grid."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import torch

from diffmia.core.io import write_bytes


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(N, C, H, W) in [-1, 1] -> (N, H, W, C) uint8."""
    x = ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


def grid_png(
    images: torch.Tensor, path: str | Path, columns: int | None = None, scale: int | None = None, private: bool = False
) -> Path:
    from PIL import Image

    pixels = to_uint8(images)
    n, h, w, c = pixels.shape
    columns = columns or math.ceil(math.sqrt(n))
    rows = math.ceil(n / columns)
    pad = 1
    canvas = np.full((rows * (h + pad) + pad, columns * (w + pad) + pad, c), 255, dtype=np.uint8)
    for i in range(n):
        r, col = divmod(i, columns)
        canvas[pad + r * (h + pad) : pad + r * (h + pad) + h, pad + col * (w + pad) : pad + col * (w + pad) + w] = (
            pixels[i]
        )
    img = Image.fromarray(canvas[..., 0] if c == 1 else canvas)
    scale = scale or max(1, 256 // max(h, 1) // 2)
    img = img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    write_bytes(path, buf.getvalue(), private)
    return Path(path)
