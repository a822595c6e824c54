"""Hostile files handed to diffmia: each gets a one-line error naming the file, runs none of its code and writes
nothing. A payload here would create MARKER if it ran; every case checks that it did not."""

from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest

from diffmia.core.config import ConfigError, DataConfig, load_config
from diffmia.targets.data import DataError, load_dataset
from tests.conftest import TINY


class Payload:
    """Unpickling this calls os.system: what a crafted pickle in a shared folder would do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _cifar(root: Path, meta=None, batch=None, protocol: int = 5) -> Path:
    root.mkdir()
    rng = np.random.default_rng(0)
    with open(root / "data_batch_1", "wb") as f:
        pickle.dump(
            batch
            if batch is not None
            else {b"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8), b"labels": [0, 1, 2, 3]},
            f,
            protocol,
        )
    with open(root / "batches.meta", "wb") as f:
        pickle.dump(meta if meta is not None else {b"label_names": [b"a", b"b", b"c", b"d"]}, f, protocol)
    return root


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_cifar_pickles_of_every_protocol_still_load(tmp_path, protocol):
    images = load_dataset(
        DataConfig(dataset="cifar10", path=str(_cifar(tmp_path / "c", protocol=protocol)), partial=True)
    )
    assert len(images) == 4 and images.captions[1] == "a photo of a b"


@pytest.mark.parametrize(
    "where, message",
    [
        ("meta", "batches.meta: not a CIFAR-10 pickle: refuses posix.system"),
        ("batch", "data_batch_1: not a CIFAR-10 pickle: refuses posix.system"),
    ],
)
def test_a_cifar_pickle_that_would_run_a_command_is_refused(tmp_path, where, message):
    marker = tmp_path / "MARKER"
    kwargs = {"meta": {b"label_names": [Payload(marker)]}} if where == "meta" else {"batch": {b"data": Payload(marker)}}
    root = _cifar(tmp_path / "c", **kwargs)
    with pytest.raises(DataError, match=message):
        load_dataset(DataConfig(dataset="cifar10", path=str(root), partial=True))
    assert not marker.exists()


@pytest.mark.parametrize(
    "batch, message",
    [
        ([1, 2, 3], "not a CIFAR-10 pickle \\(a list, expected a dict\\)"),
        ({b"data": np.array([object()] * 3, dtype=object), b"labels": [0]}, "refuses builtins.object"),
    ],
)
def test_a_cifar_pickle_of_the_wrong_shape_is_one_line(tmp_path, batch, message):
    with pytest.raises(DataError, match=message):
        load_dataset(DataConfig(dataset="cifar10", path=str(_cifar(tmp_path / "c", batch=batch)), partial=True))


def _pipeline_folder(tmp_path: Path, tiny_run: Path) -> Path:
    folder = tmp_path / "model"
    shutil.copytree(tiny_run / "target", folder)
    return folder


@pytest.mark.parametrize(
    "edit, message",
    [
        (
            lambda index: index | {"unet": ["evil", "EvilUNet"]},
            "component 'unet' names library 'evil': diffmia loads only diffusers and transformers components",
        ),
        (lambda index: index | {"_class_name": ["DDPMPipeline", "x"]}, "_class_name must be a string"),
        (lambda index: [index], "must be a JSON object, got list"),
        (lambda index: index | {"scheduler": ["diffusers"]}, "component 'scheduler' must be \\[library, class\\]"),
    ],
)
def test_a_model_folder_asking_for_its_own_code_is_refused(tiny_run, tmp_path, edit, message):
    from diffmia.targets.denoiser import ModelError
    from diffmia.targets.kinds import load_target

    folder = _pipeline_folder(tmp_path, tiny_run)
    marker = tmp_path / "MARKER"
    (folder / "evil.py").write_text(f"import pathlib\npathlib.Path({str(marker)!r}).touch()\nEvilUNet = object\n")
    index = json.loads((folder / "model_index.json").read_text())
    (folder / "model_index.json").write_text(json.dumps(edit(index)))
    with pytest.raises(ModelError, match=message):
        load_target(folder)
    assert not marker.exists()


def test_a_checkpoint_never_unpickles_what_it_finds(tmp_path):
    """A step-N/ folder planted in a results folder or a shared cache: accelerate's custom_checkpoint_N.pkl (read with
    weights_only=False by accelerate) is never read, the checkpoint is refused in one line; the loop's own state is
    JSON and safetensors. A checkpoint without that state is one line too."""
    from diffmia.core.rundir import RunDir
    from diffmia.targets.train import TrainingError, latest_checkpoint, train_target

    cfg = load_config(TINY, ["train.steps=6", "train.checkpoint_every=3"])
    out = tmp_path / "run"
    train_target(cfg, out, progress=False, stop_after=3)
    ckpt = latest_checkpoint(RunDir(out))
    assert {"lr_scheduler.json", "ema.json", "ema.safetensors"} <= {p.name for p in ckpt.iterdir()}
    assert not list(ckpt.glob("custom_checkpoint_*.pkl"))
    marker = tmp_path / "MARKER"
    for i in range(3):
        with open(ckpt / f"custom_checkpoint_{i}.pkl", "wb") as f:
            pickle.dump(Payload(marker), f)
    with pytest.raises(
        TrainingError,
        match="holds pickled state \\(custom_checkpoint_0.pkl, custom_checkpoint_1.pkl, "
        "custom_checkpoint_2.pkl\\) that diffmia never reads",
    ):
        train_target(cfg, out, resume=True, progress=False)
    assert not marker.exists()
    again = tmp_path / "old"
    train_target(cfg, again, progress=False, stop_after=3)
    (latest_checkpoint(RunDir(again)) / "lr_scheduler.json").unlink()
    with pytest.raises(TrainingError, match="checkpoint lacks lr_scheduler.json \\(written by an older diffmia"):
        train_target(cfg, again, resume=True, progress=False)


def test_resumed_training_equals_an_uninterrupted_one(tmp_path):
    """The scheduler and EMA state round-trip through JSON and safetensors: a resumed run ends with the same
    weights as one that was never stopped."""
    from safetensors.torch import load_file

    from diffmia.targets.train import train_target

    cfg = load_config(TINY, ["train.steps=6", "train.checkpoint_every=3"])
    train_target(cfg, tmp_path / "a", progress=False)
    train_target(cfg, tmp_path / "b", progress=False, stop_after=3)
    train_target(cfg, tmp_path / "b", resume=True, progress=False)
    a = load_file(tmp_path / "a/target/unet/diffusion_pytorch_model.safetensors")
    b = load_file(tmp_path / "b/target/unet/diffusion_pytorch_model.safetensors")
    assert all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)


def test_a_yaml_alias_bomb_is_refused_in_one_short_line(tmp_path):
    lines = ['a: &a ["x","x","x","x","x","x","x","x","x"]']
    for i, name in enumerate("bcdefgh"):
        prev = "abcdefgh"[i]
        lines.append(f"{name}: &{name} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]")
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError) as info:
        load_config(bomb)
    assert "aliases" in str(info.value) and len(str(info.value)) < 400


def test_a_model_config_asking_for_an_absurd_size_is_refused_before_allocating(tiny_run, tmp_path):
    from diffmia.targets.denoiser import ModelError
    from diffmia.targets.kinds import load_target

    folder = _pipeline_folder(tmp_path, tiny_run)
    config = folder / "unet" / "config.json"
    data = json.loads(config.read_text())
    config.write_text(json.dumps(data | {"block_out_channels": [8, 10**9]}))
    with pytest.raises(ModelError, match="block_out_channels = \\[8, 1000000000\\] is outside what a model can be"):
        load_target(folder)


def test_a_crafted_results_json_reads_and_writes_nothing_outside(tmp_path):
    from diffmia.evaluate.report import ReportError, check_results

    out = tmp_path / "results"
    out.mkdir()
    for results, message in [
        ({"recipes": {"../../x": {"run_dir": "r"}}, "rows": []}, "recipe name '../../x' is not a name"),
        ({"recipes": {"ok": {"run_dir": "/etc"}}, "rows": []}, "path '/etc' is outside the results folder"),
        (
            {"recipes": {"ok": {"run_dir": "r"}}, "rows": [{"recipe": "ok", "scores": "../../secret.csv"}]},
            "path '../../secret.csv' is outside",
        ),
    ]:
        with pytest.raises(ReportError, match=message):
            check_results(out, results)


def test_spreadsheet_formulas_and_markdown_are_neutralised():
    import pandas as pd

    from diffmia.core.io import csv_text, spreadsheet_safe
    from diffmia.evaluate.report import md_escape

    assert [spreadsheet_safe(v) for v in ["=1+1.png", "+x", "-y", "@z", "\tq", "ok.png", 3]] == [
        "'=1+1.png",
        "'+x",
        "'-y",
        "'@z",
        "'\tq",
        "ok.png",
        3,
    ]
    text = csv_text(pd.DataFrame({"source": ['=HYPERLINK("http://x")', "a.png"], "score": [1.0, 2.0]}))
    assert "'=HYPERLINK" in text and "\na.png," in text
    assert md_escape("<img src=x onerror=alert(1)> | [a](b)") == "\\<img src=x onerror=alert(1)\\> \\| \\[a\\](b)"


def test_audit_lists_are_confined_to_their_folder(tmp_path):
    from diffmia.auditor import list_images

    folder = tmp_path / "members"
    folder.mkdir()
    (tmp_path / "outside.png").write_bytes(b"x")
    (folder / "metadata.jsonl").write_text(json.dumps({"file_name": "../outside.png", "text": "t"}) + "\n")
    with pytest.raises(DataError, match="metadata.jsonl:1: '../outside.png' points outside"):
        list_images(folder, "members")
    listing = tmp_path / "lists" / "m.csv"
    listing.parent.mkdir()
    listing.write_text(f"path\n{tmp_path / 'outside.png'}\n")
    with pytest.raises(DataError, match="m.csv:2: .* points outside .*--allow-outside-paths"):
        list_images(listing, "members")
    assert list_images(listing, "members", allow_outside=True).paths == [tmp_path / "outside.png"]


def test_a_decompression_bomb_is_one_line(tmp_path):
    from PIL import Image

    from diffmia.auditor import ImageList, read_images

    path = tmp_path / "bomb.png"
    Image.new("L", (40, 40)).save(path)
    old = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = 100  # 1600 pixels is then over twice the limit: Pillow's DecompressionBombError
    try:
        with pytest.raises(DataError, match="bomb.png: refused, more pixels than Pillow's decompression-bomb limit"):
            read_images(ImageList([path], [""]), (1, 40, 40), "members")
    finally:
        Image.MAX_IMAGE_PIXELS = old


def test_member_derived_files_are_owner_only(tmp_path):
    import stat

    from diffmia.core.io import private_dir, write_text
    from diffmia.targets.data import load_dataset, save_npz

    old = os.umask(0o022)
    try:
        images = load_dataset(DataConfig()).subset(4)
        npz = save_npz(images, private_dir(tmp_path / "audit-data") / "a.npz")
        write_text(tmp_path / "report.md", "x")
        from diffmia.targets.manifest import SplitManifest

        SplitManifest.create(load_dataset(DataConfig()), 8, 8, 0).save(tmp_path / "manifest.json")
    finally:
        os.umask(old)
    assert stat.S_IMODE(npz.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "manifest.json").stat().st_mode) == 0o600  # every member's file name and hash
    assert stat.S_IMODE((tmp_path / "audit-data").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "report.md").stat().st_mode) == 0o644  # the report stays readable


def test_a_full_disk_in_safetensors_before_the_first_checkpoint_is_one_line(tmp_path, monkeypatch):
    from accelerate import Accelerator
    from safetensors import SafetensorError
    from typer.testing import CliRunner

    from diffmia.cli import app

    def full(self, path, *args, **kwargs):
        Path(path).mkdir(parents=True, exist_ok=True)
        raise SafetensorError(
            'Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space left on device" })'
        )

    monkeypatch.setattr(Accelerator, "save_state", full)
    out = tmp_path / "r"
    result = CliRunner().invoke(app, ["train", str(TINY), "--out", str(out), "--no-progress"])
    assert result.exit_code == 2, result.output
    assert "could not write the checkpoint (Error while serializing" in result.output
    assert "Traceback" not in result.output and not out.exists()
