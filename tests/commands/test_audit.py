"""`diffmia audit` of a model trained elsewhere: a tiny target copied out of its run folder and audited from image
folders, nothing retrained; per-image exposure; a tiny random Stable Diffusion folder audited black-box."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from diffmia.auditor import half_of, pixel_sha256
from diffmia.cli import app
from diffmia.evaluate.exposure import calibrated_p_values
from diffmia.targets.runs import load_run


def export(loaded, role, folder, limit=None):
    folder.mkdir(parents=True)
    for e in getattr(loaded.manifest, role)[:limit]:
        px = loaded.images.pixels[e.index][..., 0].astype(float) * 255 / loaded.images.max_value
        Image.fromarray(np.round(px).astype(np.uint8), "L").save(folder / f"{e.index}.png")
    return folder


@pytest.fixture(scope="module")
def elsewhere(tiny_run, tmp_path_factory):
    """The tiny target copied out of its run, with its members and non-members as PNG files."""
    root = tmp_path_factory.mktemp("elsewhere")
    loaded = load_run(tiny_run)
    shutil.copytree(tiny_run / "target", root / "model")
    export(loaded, "members", root / "members")
    non = export(loaded, "nonmembers", root / "nonmembers")
    with open(root / "nonmembers.csv", "w") as f:  # the same non-members as a CSV list of paths
        f.write("path\n" + "".join(f"nonmembers/{p.name}\n" for p in sorted(non.iterdir())))
    return root


def test_audit_of_a_copied_model_from_scratch(elsewhere, tmp_path):
    out = tmp_path / "audit"
    result = CliRunner().invoke(
        app,
        [
            "audit",
            str(elsewhere / "model"),
            "--members",
            str(elsewhere / "members"),
            "--nonmembers",
            str(elsewhere / "nonmembers.csv"),
            "--attack",
            "naive_loss",
            "--attack",
            "pia",
            "--out",
            str(out),
            "--bootstrap",
            "20",
            "--no-progress",
        ],
    )
    assert result.exit_code == 0, result.output
    rows = pd.read_csv(out / "results.csv")
    assert (
        list(rows.attack) == ["naive_loss", "pia"]
        and rows.n_test_members.iloc[0] + rows.n_calibration_members.iloc[0] == 64
    )
    scores = pd.read_csv(out / rows.scores.iloc[0])
    assert len(scores) == 128 and scores.is_member.sum() == 64
    # halves come from the seeded pixel hash of each image
    from PIL import Image as I

    for _, r in scores.sample(10, random_state=0).iterrows():
        pixels = np.asarray(I.open(r.source).convert("L"))[..., None]
        assert r.split == half_of(pixel_sha256(pixels), 0, 0.5)
    # exposure: p-value by hand for the most exposed member under the strongest attack
    exposure = pd.read_csv(out / "exposure.csv")
    assert len(exposure) == 64 and (exposure["rank"] == np.arange(1, 65)).all()
    first = exposure.iloc[0]
    strongest = pd.read_csv(out / rows.set_index("attack").scores[first.strongest_attack])
    cal_non = strongest[(strongest.split == "calibration") & (strongest.is_member == 0)].score.to_numpy()
    own = strongest.set_index("sample_id").score[first.sample_id]
    assert first.p_value == pytest.approx((1 + (cal_non >= own).sum()) / (1 + len(cal_non)))
    assert "sha256" not in exposure and "source" not in exposure  # no pixel hash, no file name (private by default)
    report = (out / "report.md").read_text()
    assert "trained elsewhere, not retrained" in report and "Most exposed images" in report
    assert "needs reference models: give --recipe CONFIG" in report  # attacks not run, with the reason
    assert json.loads((out / "results.json").read_text())["environment"]["packages"]["torch"]


def test_halves_stay_put_when_the_folder_grows():
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (8, 8, 1), dtype=np.uint8) for _ in range(50)]
    halves = [half_of(pixel_sha256(x), 3, 0.5) for x in images]
    assert 15 < halves.count("calibration") < 35
    assert [half_of(pixel_sha256(x), 3, 0.5) for x in images[:20]] == halves[:20]


def test_p_values_by_hand():
    assert calibrated_p_values(np.array([5.0, 0.0, 10.0]), np.array([1.0, 2.0, 5.0])).tolist() == [2 / 4, 4 / 4, 1 / 4]


@pytest.mark.parametrize("case", ["duplicate", "near duplicate", "wrong size", "wrong channels", "not an image"])
def test_bad_audit_inputs_are_refused_by_file(elsewhere, tmp_path, case):
    members = tmp_path / "members"
    shutil.copytree(elsewhere / "members", members)
    nonmembers = tmp_path / "nonmembers"
    shutil.copytree(elsewhere / "nonmembers", nonmembers)
    first = sorted(members.iterdir())[0]
    if case == "duplicate":
        shutil.copy(first, nonmembers / "copy.png")
        message = f"{first} ~ {nonmembers / 'copy.png'} (RMS 0.000)"
    elif case == "near duplicate":
        px = np.asarray(Image.open(first)).astype(int)
        px[0, 0] = min(255, px[0, 0] + 3)
        Image.fromarray(px.astype(np.uint8), "L").save(nonmembers / "near.png")
        message = "near.png (RMS 0.00"
    elif case == "wrong size":
        Image.new("L", (9, 8)).save(nonmembers / "big.png")
        message = "big.png: 9x8 pixels; the model takes 8x8"
    elif case == "wrong channels":
        Image.new("RGBA", (8, 8)).save(nonmembers / "rgba.png")
        message = "rgba.png: RGBA image; the model takes 1-channel (L) images"
    else:
        (nonmembers / "junk.png").write_bytes(b"not a png")
        message = "junk.png: cannot be decoded as an image"
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app,
        [
            "audit",
            str(elsewhere / "model"),
            "--members",
            str(members),
            "--nonmembers",
            str(nonmembers),
            "--out",
            str(out),
            "--no-progress",
        ],
    )
    assert result.exit_code == 2 and message in result.output, result.output
    assert not out.exists()


def test_a_tiny_stable_diffusion_folder_audited_black_box(tmp_path):
    from tests.targets.test_t2i import make_tiny_sd

    rng = np.random.default_rng(1)
    for role, count in (("members", 8), ("nonmembers", 8)):
        folder = tmp_path / role
        folder.mkdir()
        lines = []
        for i in range(count):
            Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8), "RGB").save(folder / f"{i}.png")
            lines.append(json.dumps({"file_name": f"{i}.png", "text": f"picture number {i}"}))
        (folder / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    make_tiny_sd(tmp_path / "sd", [f"picture number {i}" for i in range(8)])
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app,
        [
            "audit",
            str(tmp_path / "sd"),
            "--members",
            str(tmp_path / "members"),
            "--nonmembers",
            str(tmp_path / "nonmembers"),
            "--access",
            "black-box",
            "--out",
            str(out),
            "--bootstrap",
            "10",
            "--no-progress",
        ],
    )
    assert result.exit_code == 0, result.output
    rows = pd.read_csv(out / "results.csv")
    assert set(rows.access) == {"black-box"} and "rediffuse" in set(rows.attack)
    assert "sd_mia" not in set(rows.attack) and "give --public FOLDER" in (out / "report.md").read_text()
    assert "noise_aggregation" not in set(rows.attack)  # gray-box: not granted


def test_owner_tests_hold_their_level_under_the_null_and_find_a_shift():
    from diffmia.owner import cross_fitted, one_sided_tests

    rng = np.random.default_rng(0)
    ps = [
        one_sided_tests(rng.normal(size=30), rng.normal(size=30), permutations=200, seed=i)["permutation_p"]
        for i in range(200)
    ]
    assert 0.02 <= np.mean(np.array(ps) < 0.05) <= 0.09  # valid level: about 5% false alarms
    n = 200
    features = pd.DataFrame({"a": rng.normal(size=2 * n), "b": rng.normal(size=2 * n)})
    is_suspect = np.r_[np.ones(n, int), np.zeros(n, int)]
    features.loc[is_suspect == 1, "b"] += 0.5  # the owner's images score higher on one attack
    half = np.where(rng.random(2 * n) < 0.5, "calibration", "test")
    combined = cross_fitted(features, is_suspect, half)
    result = one_sided_tests(combined[is_suspect == 1], combined[is_suspect == 0], permutations=2000)
    assert result["permutation_p"] < 0.01 and result["effect_size_d"] > 0.3


def test_owner_cli_on_a_copied_model(elsewhere, tmp_path):
    out = tmp_path / "owner"
    result = CliRunner().invoke(
        app,
        [
            "owner",
            str(elsewhere / "model"),
            "--suspect",
            str(elsewhere / "members"),
            "--reference",
            str(elsewhere / "nonmembers"),
            "--attack",
            "naive_loss",
            "--attack",
            "pia",
            "--permutations",
            "500",
            "--out",
            str(out),
            "--no-progress",
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads((out / "owner.json").read_text())
    assert report["suspect_images"] == 64 and report["attacks"] == ["naive_loss", "pia"]
    assert 0 < report["combined"]["permutation_p"] <= 1 and report["size_curve"][-1]["set_size"] == 64
    assert (out / "owner-size-curve.png").stat().st_size > 1000 and "verdict" in result.output
    assert 0 < report["blind_baseline"]["permutation_p"] <= 1 and "blind baseline" in result.output


def test_image_properties_by_hand():
    from diffmia.evaluate.exposure import exposure_factors, image_properties
    from diffmia.targets.data import ImageSet
    from diffmia.targets.manifest import Entry, SplitManifest

    pixels = np.zeros((4, 8, 8, 1), np.uint8)
    pixels[1] = 255  # member 1 is all white; the public image 3 is a white image with one dark pixel
    pixels[3] = 255
    pixels[3, 0, 0] = 0
    images = ImageSet("t", pixels, ["a", "b", "c", "d"], ["one", "two", "two", "two"], max_value=255)
    e = lambda i, h=None: Entry(i, str(i), "0" * 64, h)  # noqa: E731
    manifest = SplitManifest(
        {"name": "t"},
        0,
        [e(0, "test"), e(1, "test")],
        [e(2, "test")],
        [e(3)],
        extra={"training_set": {"duplicated_members": [1]}},
    )
    props = image_properties(images, manifest, [0, 1])
    # member 0 (black) vs public 3 (white but one pixel): RMS over 64 pixels = sqrt(63/64)
    assert props.nearest_public_distance.tolist() == pytest.approx([np.sqrt(63 / 64), np.sqrt(1 / 64)])
    assert props["duplicated"].tolist() == [0, 1]
    assert props.caption_rarity.tolist() == pytest.approx([-np.log10(1 / 3), -np.log10(2 / 3)])
    table = pd.DataFrame({"sample_id": [0, 1], "p_value": [0.5, 0.01], "strongest_attack": ["pia", "pia"]})
    factors = {f["property"]: f["spearman"] for f in exposure_factors(table, props)}
    assert factors["duplicated"] == pytest.approx(1.0) and factors["nearest_public_distance"] == pytest.approx(-1.0)


def test_audit_merges_a_peft_lora_adapter(elsewhere, tmp_path):
    """--adapter: a LoRA adapter saved by peft is merged into the copied model's UNet before any attack."""
    import torch
    from peft import LoraConfig, get_peft_model

    from diffmia.auditor import apply_adapter
    from diffmia.targets.kinds import load_target

    base = load_target(elsewhere / "model")
    lora = get_peft_model(
        base.unet, LoraConfig(r=2, lora_alpha=2, target_modules=["to_q", "to_v"], init_lora_weights=False)
    )
    lora.save_pretrained(tmp_path / "adapter")
    plain, merged = load_target(elsewhere / "model"), load_target(elsewhere / "model")
    apply_adapter(merged, tmp_path / "adapter")
    x = torch.zeros(2, *plain.sample_shape)
    assert not torch.allclose(plain.predict_noise(x, 10), merged.predict_noise(x, 10))
    result = CliRunner().invoke(
        app,
        [
            "audit",
            str(elsewhere / "model"),
            "--adapter",
            str(tmp_path / "adapter"),
            "--members",
            str(elsewhere / "members"),
            "--nonmembers",
            str(elsewhere / "nonmembers"),
            "--attack",
            "naive_loss",
            "--out",
            str(tmp_path / "out"),
            "--bootstrap",
            "10",
            "--no-progress",
        ],
    )
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "out" / "results.json").read_text())["recipes"]["model"]["adapter"].endswith(
        "adapter"
    )
    bad = CliRunner().invoke(
        app,
        [
            "audit",
            str(elsewhere / "model"),
            "--adapter",
            str(tmp_path),
            "--members",
            str(elsewhere / "members"),
            "--nonmembers",
            str(elsewhere / "nonmembers"),
        ],
    )
    assert bad.exit_code == 2 and "neither a peft adapter folder" in bad.output


def test_audit_with_the_recipe_trains_cached_references_on_the_audited_images(elsewhere, tmp_path, shared_cache):
    """--recipe: LiRA's references retrain the team's recipe on halves of exactly the audited images (an image .npz
    in the cache, keyed by content), are cached, and a second audit of the same images reuses them; RMIA (offline)
    is skipped with the reason when there are fewer public images than members."""
    from diffmia.core.config import load_config
    from diffmia.targets.data import load_dataset
    from diffmia.targets.manifest import SplitManifest
    from tests.conftest import REPO

    base = [
        "audit",
        str(elsewhere / "model"),
        "--members",
        str(elsewhere / "members"),
        "--nonmembers",
        str(elsewhere / "nonmembers"),
        "--recipe",
        str(REPO / "configs" / "tiny.yaml"),
        "--attack",
        "lira",
        "--set",
        "lira.references=2",
        "--set",
        "lira.draws=1",
        "--bootstrap",
        "20",
        "--no-progress",
    ]
    first = CliRunner().invoke(app, [*base, "--out", str(tmp_path / "a")])
    assert first.exit_code == 0, first.output
    info = json.loads(next((tmp_path / "a").rglob("lira.json")).read_text())
    refs = info["references"]
    assert refs["count"] == 2 and refs["cached"] == 0 and info["params"]["references"] == 2
    audited = {str(p) for p in (elsewhere / "members").iterdir()} | {
        str(p) for p in (elsewhere / "nonmembers").iterdir()
    }
    for folder in refs["folders"]:
        split = SplitManifest.load(f"{folder}/manifest.json")
        assert len(split.members) == 64 and {e.source for e in split.members} <= audited
    cfg = load_config(f"{refs['folders'][0]}/config.yaml")
    assert cfg.data.dataset == "npz" and cfg.model.block_out_channels == [8, 16]  # the recipe's model, audited data
    assert len(load_dataset(cfg.data)) == 128
    results = json.loads((tmp_path / "a" / "results.json").read_text())
    assert "give --public FOLDER with at least 64 images" in results["recipes"]["model"]["skipped_attacks"]["rmia"]
    again = CliRunner().invoke(app, [*base, "--out", str(tmp_path / "b")])
    assert again.exit_code == 0, again.output
    info_b = json.loads(next((tmp_path / "b").rglob("lira.json")).read_text())
    assert info_b["references"]["cached"] == 2 and info_b["references"]["folders"] == refs["folders"]
    a, b = (pd.read_csv(next((tmp_path / d).rglob("lira.csv"))) for d in "ab")
    pd.testing.assert_frame_equal(a, b)  # the same seed gives the same scores
    bad = CliRunner().invoke(
        app, [*base[: base.index("--set")], "--set", "rmia.references=2", "--out", str(tmp_path / "c")]
    )
    assert bad.exit_code != 0 and "rmia is not among the attacks this audit runs (lira)" in bad.output


def test_audit_merges_a_diffusers_lora_file(tmp_path):
    """--adapter FILE: a pytorch_lora_weights.safetensors as the diffusers LoRA scripts save it (UNet and text-encoder
    layers) is merged; its predictions are the peft-adapted model's; a file for another architecture, a pickled
    file and an unknown path are refused naming the file; the report says which format it found."""
    import torch
    from diffusers import StableDiffusionPipeline
    from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model

    from diffmia.auditor import apply_adapter
    from diffmia.targets.denoiser import ModelError
    from diffmia.targets.kinds import load_target
    from tests.targets.test_t2i import make_tiny_sd

    make_tiny_sd(tmp_path / "sd", ["a picture"])
    tuned = load_target(tmp_path / "sd")
    tuned.unet.add_adapter(LoraConfig(r=2, lora_alpha=2, target_modules=["to_q", "to_v"], init_lora_weights=False))
    tuned.text_encoder = inject_adapter_in_model(
        LoraConfig(r=2, lora_alpha=2, target_modules=["q_proj", "v_proj"], init_lora_weights=False),
        tuned.text_encoder,
    )
    StableDiffusionPipeline.save_lora_weights(
        tmp_path / "lora",
        unet_lora_layers=get_peft_model_state_dict(tuned.unet),
        text_encoder_lora_layers=get_peft_model_state_dict(tuned.text_encoder),
    )
    file = tmp_path / "lora" / "pytorch_lora_weights.safetensors"
    plain, merged = load_target(tmp_path / "sd"), load_target(tmp_path / "sd")
    assert apply_adapter(merged, file) == "diffusers-lora (UNet + text encoder)"
    x = torch.randn(2, *plain.sample_shape, generator=torch.Generator().manual_seed(0))
    expected = tuned.predict_noise(x, 10, ["a picture", "a picture"])
    assert torch.allclose(merged.predict_noise(x, 10, ["a picture", "a picture"]), expected, atol=1e-5)
    assert not torch.allclose(plain.predict_noise(x, 10, ["a picture", "a picture"]), expected, atol=1e-5)
    assert apply_adapter(load_target(tmp_path / "sd"), tmp_path / "lora").startswith("diffusers-lora")  # the folder

    from safetensors.torch import load_file, save_file

    state = load_file(file)
    save_file({k.replace("down_blocks", "side_blocks"): v for k, v in state.items()}, tmp_path / "other.safetensors")
    with pytest.raises(ModelError, match="other.safetensors"):
        apply_adapter(load_target(tmp_path / "sd"), tmp_path / "other.safetensors")
    (tmp_path / "lora.bin").write_bytes(b"\x80\x04")
    with pytest.raises(ModelError, match="lora.bin: a pickled file"):
        apply_adapter(load_target(tmp_path / "sd"), tmp_path / "lora.bin")
    with pytest.raises(ModelError, match="neither a peft adapter folder"):
        apply_adapter(load_target(tmp_path / "sd"), tmp_path / "sd")


def test_references_as_submitit_jobs_equal_references_trained_here(elsewhere, tmp_path, monkeypatch):
    """--reference-executor local: each missing reference is one submitit job (map_array: a Slurm job array on a
    cluster); the scores equal those of references trained in this process, and the environment is restored."""
    import os

    from diffmia.core.parallel import EXECUTOR_ENV
    from tests.conftest import REPO

    base = ["audit", str(elsewhere / "model"), "--members", str(elsewhere / "members")]
    base += ["--nonmembers", str(elsewhere / "nonmembers"), "--recipe", str(REPO / "configs" / "tiny.yaml")]
    base += ["--attack", "lira", "--set", "lira.references=2", "--set", "lira.draws=1", "--bootstrap", "20"]
    monkeypatch.setenv("DIFFMIA_CACHE", str(tmp_path / "jobs-cache"))
    jobs = CliRunner().invoke(app, [*base, "--reference-executor", "local", "--out", str(tmp_path / "jobs")])
    assert jobs.exit_code == 0, jobs.output
    assert EXECUTOR_ENV not in os.environ
    info = json.loads(next((tmp_path / "jobs").rglob("lira.json")).read_text())["references"]
    assert info["executor"] == "local" and info["cached"] == 0
    assert len(list((tmp_path / "jobs-cache" / "reference-jobs").glob("*_log.err"))) >= 2  # one log per job
    monkeypatch.undo()  # back to the session's cache: references an earlier test trained in this process are reused
    here = CliRunner().invoke(app, [*base, "--out", str(tmp_path / "here")])
    assert here.exit_code == 0, here.output
    a = pd.read_csv(next((tmp_path / "jobs").rglob("lira.csv")))
    b = pd.read_csv(next((tmp_path / "here").rglob("lira.csv")))
    assert a.score.tolist() == b.score.tolist()
