"""Image tables as teams store them (targets/tables.py): a `datasets` folder from save_to_disk and parquet files,
with an image and a text column, as --members / --nonmembers of `diffmia audit` and as a training dataset; image
paths outside the table refused; a missing column named."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from diffmia.cli import app
from diffmia.core.config import DataConfig
from diffmia.targets.data import DataError, load_dataset
from diffmia.targets.tables import is_table, read_table
from tests.commands.test_audit import elsewhere  # noqa: F401 - the fixture

datasets = pytest.importorskip("datasets")


def table_of(folder, captions=None):
    files = sorted(folder.iterdir())  # the order list_images reads a folder in: the same sample ids
    images = [Image.open(f).copy() for f in files]
    data = {"image": images, "text": captions or [f"image {f.stem}" for f in files]}
    features = datasets.Features({"image": datasets.Image(), "text": datasets.Value("string")})
    return datasets.Dataset.from_dict(data, features=features), files


def test_audit_reads_a_saved_dataset_and_parquet_files(elsewhere, tmp_path):  # noqa: F811
    members, files = table_of(elsewhere / "members")
    members.save_to_disk(str(tmp_path / "members-ds"))
    nonmembers, _ = table_of(elsewhere / "nonmembers")
    (tmp_path / "non").mkdir()
    nonmembers.to_parquet(str(tmp_path / "non" / "train-00000.parquet"))
    assert is_table(tmp_path / "members-ds") and is_table(tmp_path / "non") and not is_table(elsewhere / "members")
    rows = read_table(tmp_path / "members-ds")
    assert len(rows.records) == 64 and rows.captions[0] == f"image {files[0].stem}"
    assert rows.sources[3] == f"{tmp_path / 'members-ds'}:3"

    out = tmp_path / "audit"
    args = ["audit", str(elsewhere / "model"), "--members", str(tmp_path / "members-ds")]
    args += ["--nonmembers", str(tmp_path / "non"), "--attack", "naive_loss", "--bootstrap", "20", "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    from_tables = json.loads((out / "results.json").read_text())["rows"][0]
    folders = tmp_path / "folders"
    args = ["audit", str(elsewhere / "model"), "--members", str(elsewhere / "members")]
    args += ["--nonmembers", str(elsewhere / "nonmembers"), "--attack", "naive_loss", "--bootstrap", "20"]
    result = CliRunner().invoke(app, [*args, "--out", str(folders)])
    assert result.exit_code == 0, result.output
    from_files = json.loads((folders / "results.json").read_text())["rows"][0]
    assert from_tables["auc"] == from_files["auc"]  # the same pixels, the same halves, the same scores


def test_a_training_dataset_from_a_table(tmp_path):
    images = [Image.fromarray(np.full((12, 10, 3), 40 * i, np.uint8)) for i in range(6)]
    ds = datasets.Dataset.from_dict(
        {"img": images, "caption": [f"c{i}" for i in range(6)]},
        features=datasets.Features({"img": datasets.Image(), "caption": datasets.Value("string")}),
    )
    ds.save_to_disk(str(tmp_path / "ds"))
    cfg = DataConfig(
        dataset="hf", path=str(tmp_path / "ds"), resolution=8, image_column="img", caption_column="caption"
    )
    loaded = load_dataset(cfg)
    assert loaded.pixels.shape == (6, 8, 8, 3) and loaded.captions[2] == "c2" and loaded.pixels[2].max() == 80
    with pytest.raises(DataError, match="no image column 'image'"):
        load_dataset(cfg.model_copy(update={"image_column": "image"}))
    dd = datasets.DatasetDict({"train": ds, "test": ds.select(range(2))})
    dd.save_to_disk(str(tmp_path / "dd"))
    assert len(load_dataset(cfg.model_copy(update={"path": str(tmp_path / "dd")}))) == 6
    assert len(load_dataset(cfg.model_copy(update={"path": f"{tmp_path / 'dd'}:test"}))) == 2


def test_image_paths_outside_the_table_are_refused(tmp_path):
    outside = tmp_path / "secret.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(outside)
    import pyarrow as pa
    import pyarrow.parquet as pq

    record = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    table = pa.table({"image": pa.array([{"bytes": None, "path": "../secret.png"}], type=record), "text": ["x"]})
    (tmp_path / "t").mkdir()
    pq.write_table(table, tmp_path / "t" / "a.parquet")
    with pytest.raises(DataError, match="points outside"):
        read_table(tmp_path / "t")


def test_an_undecodable_row_is_named(tmp_path):
    ds = datasets.Dataset.from_dict(
        {"image": [{"bytes": b"not an image", "path": None}], "text": ["x"]},
        features=datasets.Features({"image": datasets.Image(decode=False), "text": datasets.Value("string")}),
    )
    ds.to_parquet(str(tmp_path / "bad.parquet"))
    cfg = DataConfig(dataset="hf", path=str(tmp_path / "bad.parquet"), resolution=8)
    with pytest.raises(DataError, match=r"bad.parquet:0: cannot be decoded as an image"):
        load_dataset(cfg)


def test_a_missing_datasets_package_is_named(tmp_path, monkeypatch):
    import sys

    (tmp_path / "a.parquet").write_bytes(b"PAR1")
    monkeypatch.setitem(sys.modules, "datasets", None)  # import datasets now fails
    with pytest.raises(DataError, match=r'pip install "diffmia\[datasets\]"'):
        read_table(tmp_path / "a.parquet")
