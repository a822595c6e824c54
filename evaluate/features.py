"""Feature networks for FID/KID. Each is an nn.Module taking images in [-1, 1] (N, C, H, W) and returning
(N, num_features); torchmetrics' FrechetInceptionDistance and KernelInceptionDistance take it as `feature=`.

- `digits-classifier`: a small CNN trained on the public split's digit labels (never on members or non-members),
  seeded and cached on disk. Its FID is labelled "FID (digits-classifier features)": comparable across recipes on
  digits, not with published Inception FIDs.
- `clip` / `dinov2`: image embeddings from a local transformers folder (no download).
- `inception`: the standard Inception FID through torchmetrics with a local weights file; needs torch-fidelity
  (and so torchvision): the `inception` extra. It cannot run on the CPU-only machines diffmia is developed on.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from diffmia.core.errors import DiffmiaError
from diffmia.core.io import atomic_path
from diffmia.targets.data import ImageSet


class FeatureError(DiffmiaError, RuntimeError):
    """A feature network that cannot be built here; the message says what to install or where to put weights."""


class DigitsClassifier(nn.Module):
    """Conv 32 -> conv 64 -> pool -> conv 64 -> global average: 64 features; a linear head over 10 digits."""

    num_features = 64

    def __init__(self, channels: int = 1, classes: int = 10):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, 32, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, 64, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(64, 64, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Linear(64, classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.body(images.float())

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward(images))


def train_digits_classifier(
    images: ImageSet,
    indices: list[int],
    resolution: int | None,
    seed: int = 0,
    epochs: int = 30,
    cache_dir: str | Path | None = None,
) -> tuple[DigitsClassifier, dict]:
    """Train (or load from cache) the feature classifier on `indices` (the public split). 20% held out for accuracy."""
    if images.labels is None:
        raise FeatureError(f"{images.name}: the digits-classifier features need class labels, and this data has none")
    key = hashlib.sha256(
        json.dumps(
            {
                "hashes": [images.hashes()[i] for i in indices],
                "resolution": resolution,
                "seed": seed,
                "epochs": epochs,
                "version": 2,
            }
        ).encode()
    ).hexdigest()[:16]
    torch.manual_seed(seed)  # the initial weights, too, come from the seed alone
    model = DigitsClassifier(images.channels, int(images.labels.max()) + 1)
    cache = Path(cache_dir) / f"digits-classifier-{key}" if cache_dir else None
    if cache and (cache / "model.safetensors").is_file():
        model.load_state_dict(load_file(cache / "model.safetensors"))
        return model.eval(), json.loads((cache / "info.json").read_text())
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(indices), generator=gen).tolist()
    cut = int(0.8 * len(order))
    train_idx = [indices[i] for i in order[:cut]]
    held_idx = [indices[i] for i in order[cut:]]
    x, y = images.tensor(train_idx, resolution), torch.as_tensor(images.labels[train_idx], dtype=torch.long)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=gen)
        for start in range(0, len(x), 64):
            b = perm[start : start + 64]
            loss = F.cross_entropy(model.logits(x[b]), y[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        xh, yh = images.tensor(held_idx, resolution), torch.as_tensor(images.labels[held_idx])
        accuracy = float((model.logits(xh).argmax(1) == yh).float().mean()) if len(held_idx) else float("nan")
    info = {
        "features": "digits-classifier",
        "train_images": len(train_idx),
        "held_out_accuracy": round(accuracy, 4),
        "epochs": epochs,
        "seed": seed,
    }
    if cache:
        cache.mkdir(parents=True, exist_ok=True)
        with atomic_path(cache / "model.safetensors") as tmp:
            save_file(model.state_dict(), str(tmp))
        (cache / "info.json").write_text(json.dumps(info))
    return model, info


def public_digits_classifier(
    images: ImageSet,
    manifest,
    resolution: int | None,
    seed: int = 0,
    epochs: int = 30,
    cache_dir: str | Path | None = None,
) -> tuple[DigitsClassifier, dict]:
    """The feature classifier trained on a split's public images only (never members or non-members)."""
    return train_digits_classifier(images, manifest.indices("public"), resolution, seed, epochs, cache_dir)


class TransformersImageFeatures(nn.Module):
    """CLIP (image_embeds) or DINOv2 (CLS pooler output) from a local transformers folder."""

    def __init__(self, path: str | Path, kind: str):
        super().__init__()
        path = Path(path)
        if not (path / "config.json").is_file():
            raise FeatureError(
                f"{path}: no transformers model folder here (config.json missing); features are never downloaded"
            )
        if kind == "clip":
            from transformers import CLIPVisionModelWithProjection

            self.model = CLIPVisionModelWithProjection.from_pretrained(
                path, use_safetensors=True, trust_remote_code=False
            ).eval()
            self.num_features = int(self.model.config.projection_dim)
        elif kind == "dinov2":
            from transformers import Dinov2Model

            self.model = Dinov2Model.from_pretrained(path, use_safetensors=True, trust_remote_code=False).eval()
            self.num_features = int(self.model.config.hidden_size)
        else:
            raise FeatureError(f"unknown transformers feature kind {kind!r}; known: clip, dinov2")
        self.kind = kind
        self.size = int(self.model.config.image_size)
        mean, std = _normalisation(path, kind)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1))

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = (images.float() + 1) / 2
        if x.shape[1] == 1:
            x = x.repeat(1, 3, 1, 1)
        x = F.interpolate(x, size=(self.size, self.size), mode="bicubic", align_corners=False).clamp(0, 1)
        x = (x - self.mean) / self.std
        out = self.model(pixel_values=x)
        return out.image_embeds if self.kind == "clip" else out.pooler_output


def _normalisation(path: Path, kind: str) -> tuple[list[float], list[float]]:
    pre = path / "preprocessor_config.json"
    if pre.is_file():
        cfg = json.loads(pre.read_text())
        if "image_mean" in cfg and "image_std" in cfg:
            return cfg["image_mean"], cfg["image_std"]
    if kind == "clip":
        return [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]
    return [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def inception_fid_metric(weights_path: str | Path | None):
    """torchmetrics' standard Inception FID from a local weights file (needs the `inception` extra)."""
    try:
        import torch_fidelity  # noqa: F401
    except Exception:  # noqa: BLE001 - ImportError, or torchvision failing inside it
        raise FeatureError(
            "Inception FID needs torch-fidelity (and a working torchvision): pip install 'diffmia[inception]'. "
            "On machines without torchvision, use utility.features: digits-classifier, clip or dinov2."
        ) from None
    if not weights_path or not Path(weights_path).is_file():
        raise FeatureError(
            f"Inception FID needs the FID Inception weights file (pt_inception-2015-12-05) at utility.features_path; "
            f"got {weights_path!r}. Weights are never downloaded at run time."
        )
    from torchmetrics.image.fid import FrechetInceptionDistance

    return FrechetInceptionDistance(
        feature=2048, normalize=True, feature_extractor_weights_path=str(weights_path), sync_on_compute=False
    )  # the main process alone computes it


def to_unit_interval(images: torch.Tensor) -> torch.Tensor:
    return ((images.float() + 1) / 2).clamp(0, 1)


__all__ = [
    "DigitsClassifier",
    "FeatureError",
    "TransformersImageFeatures",
    "inception_fid_metric",
    "public_digits_classifier",
    "train_digits_classifier",
    "to_unit_interval",
]
