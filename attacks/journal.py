"""The journal of an attack in progress: the rows of every finished batch, kept on disk so that a killed attack (an
SD-MIA run of hours on a real model) resumes where it stopped instead of starting again.

`.NAME.journal.jsonl` beside the score file, owner-only (it holds member file names): a first line with the key of
the computation, then one line per finished batch with its rows and the images the attack dropped in it. The key is a
hash of everything a row depends on: the attack's name, full parameters and seed, the batch size and precision (which
move floats), the images and their halves, and a fingerprint of the model's weights. A journal with another key is
never read (a changed config scores from scratch); a torn last line (killed mid-write) is ignored. Every random draw
is seeded per image and the remaining images are cut into the same batches as an uninterrupted run, so the resumed
score file is bit-identical to one that was never stopped. The journal is removed once the score file is complete.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import torch

logger = logging.getLogger(__name__)


def weights_fingerprint(target) -> str:
    """A hash of every denoiser / text-encoder / VAE parameter's name, shape and 64 strided values: changes with any
    retraining, costs one strided read of the weights."""
    h = hashlib.sha256()
    for attr in ("unet", "text_encoder", "vae"):
        module = getattr(target, attr, None)
        if not isinstance(module, torch.nn.Module):
            continue
        for name, p in module.named_parameters():
            flat = p.detach().reshape(-1)
            sample = flat[:: max(1, flat.numel() // 64)].double().cpu().numpy().tobytes()
            h.update(f"{attr}.{name}{tuple(p.shape)}".encode())
            h.update(sample)
    return h.hexdigest()


def journal_key(attack, entries, batch_size: int, target) -> str:
    data = {
        "attack": attack.name,
        "params": attack.params.model_dump(mode="json"),
        "seed": attack.seed,
        "batch_size": int(batch_size),
        "precision": str(target.autocast_dtype),
        "entries": [[e.index, e.half, int(m)] for e, m in entries],
        "weights": weights_fingerprint(target),
    }
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


class Journal:
    """Append-only record of the finished batches of one attack on one target."""

    def __init__(self, out_dir: Path, name: str, key: str):
        self.path = Path(out_dir) / f".{name}.journal.jsonl"
        self.key = key
        self._file = None

    def load(self) -> tuple[dict[int, list], list[int]]:
        """(sample_id -> row, dropped ids) of the batches a killed run finished under this key; empty otherwise
        (and a journal of another computation is discarded)."""
        if not self.path.is_file():
            return {}, []
        rows: dict[int, list] = {}
        dropped: list[int] = []
        with open(self.path, encoding="utf-8") as f:
            lines = f.read().split("\n")
        try:
            head = json.loads(lines[0])
        except (json.JSONDecodeError, IndexError):
            head = {}
        if head.get("key") != self.key:
            logger.info(f"{self.path.name}: from another attack config or model; not reused")
            self.path.unlink(missing_ok=True)
            return {}, []
        for line in lines[1:]:
            try:
                batch = json.loads(line)
            except json.JSONDecodeError:  # a batch torn by the kill: scored again
                break
            for row in batch["rows"]:
                rows[int(row[0])] = row
            dropped += [int(i) for i in batch.get("dropped", [])]
        return rows, dropped

    def open(self, resumed: bool) -> None:
        """Start appending (a fresh journal unless resuming one under the same key)."""
        if not resumed:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(json.dumps({"key": self.key}) + "\n")
        else:  # a torn last line is cut off before new batches follow it
            text = self.path.read_text(encoding="utf-8")
            keep = text[: text.rfind("\n") + 1]
            if keep != text:
                self.path.write_text(keep, encoding="utf-8")
        self._file = open(self.path, "a", encoding="utf-8")

    def append(self, rows: list[list], dropped: list[int]) -> None:
        self._file.write(json.dumps({"rows": rows, "dropped": sorted(dropped)}) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self, done: bool) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if done:
            self.path.unlink(missing_ok=True)
