import json

import numpy as np
import pytest

from diffmia.core.config import DataConfig
from diffmia.targets.data import ImageSet, load_dataset
from diffmia.targets.manifest import ManifestError, SplitManifest


@pytest.fixture(scope="module")
def digits():
    return load_dataset(DataConfig())


def test_deterministic_and_disjoint(digits, tmp_path):
    a = SplitManifest.create(digits, 100, 80, seed=3)
    b = SplitManifest.create(digits, 100, 80, seed=3)
    c = SplitManifest.create(digits, 100, 80, seed=4)
    assert a.to_dict() == b.to_dict() and a.to_dict() != c.to_dict()
    mem, non, pub = (set(a.indices(r)) for r in ("members", "nonmembers", "public"))
    assert len(mem) == 100 and len(non) == 80 and len(pub) == len(digits) - 180
    assert not (mem & non) and not (mem & pub) and not (non & pub)
    assert len(a.indices("members", "calibration")) == 50 and len(a.indices("nonmembers", "test")) == 40
    a.save(tmp_path / "m.json")
    loaded = SplitManifest.load(tmp_path / "m.json")
    assert loaded.to_dict() == a.to_dict()
    loaded.verify(digits)


def edit(tmp_path, digits, change):
    SplitManifest.create(digits, 20, 20, seed=0).save(tmp_path / "m.json")
    raw = json.loads((tmp_path / "m.json").read_text())
    change(raw)
    (tmp_path / "m.json").write_text(json.dumps(raw))
    return tmp_path / "m.json"


def test_refuses_overlap(digits, tmp_path):
    def overlap(raw):
        raw["nonmembers"][0] = dict(raw["members"][0], half="calibration")

    with pytest.raises(ManifestError, match="overlap: image .* is in members and nonmembers"):
        SplitManifest.load(edit(tmp_path, digits, overlap))


def test_refuses_duplicates(digits, tmp_path):
    def dup(raw):
        raw["members"].append(raw["members"][0])

    with pytest.raises(ManifestError, match="duplicate entry"):
        SplitManifest.load(edit(tmp_path, digits, dup))


def test_refuses_changed_pixels(digits, tmp_path):
    path = edit(tmp_path, digits, lambda raw: None)
    manifest = SplitManifest.load(path)
    changed = ImageSet(digits.name, digits.pixels.copy(), digits.sources, digits.captions, digits.max_value)
    changed.pixels[manifest.members[0].index, 0, 0, 0] ^= 1
    with pytest.raises(ManifestError, match="changed since the manifest was written"):
        manifest.verify(changed)


def test_refuses_malformed(digits, tmp_path):
    with pytest.raises(ManifestError, match="malformed"):
        SplitManifest.load(edit(tmp_path, digits, lambda raw: raw["members"][0].pop("sha256")))
    (tmp_path / "x.json").write_text("[1]")
    with pytest.raises(ManifestError, match="not a diffmia split manifest"):
        SplitManifest.load(tmp_path / "x.json")


def test_identical_pixels_never_on_both_sides():
    pixels = np.zeros((10, 4, 4, 1), dtype=np.uint8)
    for i in range(5):
        pixels[i, 0, 0, 0] = i + 1  # five distinct images; 5..9 are copies of the blank one
    images = ImageSet("toy", pixels, [str(i) for i in range(10)], ["c"] * 10)
    with pytest.raises(ManifestError, match="exceeds the 6 distinct images"):
        SplitManifest.create(images, 4, 3, seed=0)
    m = SplitManifest.create(images, 3, 3, seed=0)
    hashes = {e.sha256 for e in m.members} & {e.sha256 for e in m.nonmembers}
    assert not hashes
