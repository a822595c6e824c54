"""An image captioner from a local transformers folder, for SD-MIA's d_x (the paper captions with BLIP-2).

Any image-to-text model that `AutoModelForImageTextToText` loads and whose processor takes `images=` works: BLIP,
BLIP-2, a vision-encoder-decoder. Nothing is ever downloaded; a folder without config.json is a clear error.
Decoding is greedy, so the same image always gets the same caption.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from diffmia.core.config import ConfigError


class ImageCaptioner:
    def __init__(self, path: str | Path, max_new_tokens: int = 20, batch_size: int = 32):
        path = Path(path)
        if not (path / "config.json").is_file():
            raise ConfigError(
                f"attack sd_mia: captioner_path {path}: no transformers model folder (config.json missing);"
                " captioners are never downloaded"
            )
        from transformers import AutoModelForImageTextToText, AutoProcessor

        try:
            self.processor = AutoProcessor.from_pretrained(path, trust_remote_code=False)
            self.model = AutoModelForImageTextToText.from_pretrained(
                path, use_safetensors=True, trust_remote_code=False
            ).eval()
        except (OSError, ValueError, KeyError) as err:
            raise ConfigError(
                f"attack sd_mia: captioner_path {path}: cannot load an image-to-text model and its "
                f"processor from this folder ({type(err).__name__}: {err})"
            ) from err
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size

    @staticmethod
    def to_pil(images: torch.Tensor) -> list:
        """[-1, 1] tensors (N, C, H, W) -> RGB PIL images (grayscale repeated); the processor resizes them."""
        from PIL import Image

        from diffmia.targets.images import to_uint8

        x = to_uint8(images.detach().float())  # (N, H, W, C)
        if x.shape[-1] == 1:
            x = np.repeat(x, 3, axis=-1)
        return [Image.fromarray(np.ascontiguousarray(a)) for a in x]

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> list[str]:
        out: list[str] = []
        for start in range(0, len(images), self.batch_size):
            pil = self.to_pil(images[start : start + self.batch_size])
            inputs = self.processor(images=pil, return_tensors="pt")
            ids = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False, num_beams=1)
            out += [t.strip() for t in self.processor.batch_decode(ids, skip_special_tokens=True)]
        return out
