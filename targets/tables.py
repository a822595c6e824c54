"""Image tables as teams store them: a Hugging Face `datasets` folder written by `save_to_disk`, or parquet files (what
the diffusers training scripts load with `load_dataset`), with an image column and an optional text column.

Both are read through the `datasets` package (an optional extra: `pip install "diffmia[datasets]"`; a clear error
names it when it is missing), the image column as undecoded `{bytes, path}` records so that diffmia decodes every image
itself (Pillow's decompression-bomb limit, the same refusals as an image file). An image stored as a path instead of
bytes must lie inside the table's folder, as a metadata.jsonl entry must. A `DatasetDict` folder (one subfolder per
split) is read from its `train` split, or the one split it has; `PATH:SPLIT` names another.

Each row's source is `TABLE:ROW` (the file or folder and the row number), which manifests and score files record.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from diffmia.core.config import DataConfig
from diffmia.core.registries import DATASETS

from .data import DataError, ImageSet, _square_resize

EXTRA = 'reading a datasets folder or parquet files needs the datasets package: pip install "diffmia[datasets]"'


@dataclass
class TableRows:
    """What a table holds, undecoded: one source name, image record and caption per row."""

    where: Path
    sources: list[str]
    records: list[dict]  # {"bytes": ..., "path": ...} per row
    captions: list[str]


def is_table(path: str | Path) -> bool:
    """A parquet file, a folder of parquet files, or a save_to_disk folder (dataset_info.json / state.json /
    dataset_dict.json)."""
    path = Path(_split(str(path))[0])
    if path.is_file():
        return path.suffix.lower() == ".parquet"
    if not path.is_dir():
        return False
    markers = ("state.json", "dataset_dict.json", "dataset_info.json")
    return any((path / m).is_file() for m in markers) or any(path.rglob("*.parquet"))


def _split(text: str) -> tuple[str, str | None]:
    """'folder:split' -> (folder, split); a path that exists as written has no split suffix."""
    if Path(text).exists() or ":" not in text:
        return text, None
    head, _, tail = text.rpartition(":")
    return head, tail or None


def _datasets():
    try:
        import datasets
    except ImportError:
        raise DataError(EXTRA) from None
    return datasets


def read_table(spec: str | Path, image_column: str = "image", caption_column: str = "text") -> TableRows:
    """Every row of a table: its image record (undecoded) and caption (empty where the column is missing)."""
    text, split = _split(str(spec))
    path = Path(text)
    datasets = _datasets()
    if path.is_file() or (path.is_dir() and not _saved_to_disk(path)):
        files = [path] if path.is_file() else sorted(path.rglob("*.parquet"))
        if not files:
            raise DataError(f"{path}: no parquet files found")
        table = datasets.Dataset.from_parquet([str(f) for f in files], keep_in_memory=True)
        root = path.parent if path.is_file() else path
    else:
        loaded = datasets.load_from_disk(str(path), keep_in_memory=True)
        if isinstance(loaded, datasets.DatasetDict):
            names = list(loaded)
            choice = split or ("train" if "train" in loaded else names[0] if len(names) == 1 else None)
            if choice not in loaded:
                raise DataError(
                    f"{path}: a DatasetDict with splits {', '.join(names)}; name one as {path}:SPLIT"
                    + (f" ({split!r} is not among them)" if split else "")
                )
            loaded = loaded[choice]
        table, root = loaded, path
    if image_column not in table.column_names:
        raise DataError(
            f"{path}: no image column {image_column!r} (columns: {', '.join(table.column_names)}); "
            "name it with --image-column / data.image_column"
        )
    feature = table.features[image_column]
    if isinstance(feature, datasets.Image):
        table = table.cast_column(image_column, datasets.Image(decode=False))
    elif not (isinstance(feature, datasets.Value) and feature.dtype in ("binary", "large_binary")) and not (
        isinstance(feature, dict) and "bytes" in feature  # {bytes, path} written by another tool than datasets
    ):
        raise DataError(f"{path}: column {image_column!r} holds {feature!r}, not images")
    records = [_record(r, path, root, i) for i, r in enumerate(table[image_column])]
    captions = [str(c or "").strip() for c in table[caption_column]] if caption_column in table.column_names else []
    return TableRows(path, [f"{path}:{i}" for i in range(len(records))], records, captions or [""] * len(records))


def _saved_to_disk(path: Path) -> bool:
    return any((path / m).is_file() for m in ("state.json", "dataset_dict.json"))


def _record(value, path: Path, root: Path, row: int) -> dict:
    if isinstance(value, (bytes, bytearray)):
        return {"bytes": bytes(value), "path": None}
    if not isinstance(value, dict):
        raise DataError(f"{path}: row {row}: the image is neither bytes nor an image record")
    if value.get("bytes") is None:
        name = value.get("path")
        if not name:
            raise DataError(f"{path}: row {row}: an image record with neither bytes nor a path")
        file = (root / name).resolve()
        if root.resolve() not in file.parents:
            raise DataError(f"{path}: row {row}: image path {str(name)[:120]!r} points outside {root}")
        return {"bytes": None, "path": str(file)}
    return {"bytes": value["bytes"], "path": None}


def open_record(record: dict, where: str):
    """A PIL image of one row (a context manager), with the image-file refusals of `open_image`."""
    from .data import open_image

    return open_image(Path(record["path"]) if record["bytes"] is None else _Named(record["bytes"], where))


class _Named(io.BytesIO):
    """Bytes that name their row in open_image's errors."""

    def __init__(self, data: bytes, where: str):
        super().__init__(data)
        self.where = where

    def __str__(self) -> str:
        return self.where


@DATASETS.register("hf")
def load_table(cfg: DataConfig) -> ImageSet:
    """A Hugging Face datasets folder (save_to_disk) or parquet files with an image column and an optional caption
    column (targets/tables.py), each image cropped to a square and resized to data.resolution."""
    rows = read_table(cfg.path, cfg.image_column, cfg.caption_column)
    count = min(len(rows.records), cfg.max_images or len(rows.records))
    pixels = []
    for source, record in zip(rows.sources[:count], rows.records[:count]):
        with open_record(record, source) as img:
            pixels.append(_square_resize(img.convert("RGB"), int(cfg.resolution)))
    if not pixels:
        raise DataError(f"{rows.where}: holds no rows")
    return ImageSet(rows.where.name, np.stack(pixels), rows.sources[:count], rows.captions[:count])
