"""FID/KID: the digits-classifier features, local transformers features on tiny random configs, clear errors."""

import pytest
import torch

from diffmia.evaluate.features import FeatureError, TransformersImageFeatures, inception_fid_metric
from diffmia.evaluate.fid import UtilityConfig, compute_utility, distances
from diffmia.targets.runs import load_run


def test_identical_sets_have_zero_fid_and_shifted_sets_do_not():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 8))
    net.num_features = 8
    real = torch.randn(200, 1, 8, 8)
    same = distances(net, real, real.clone())
    far = distances(net, real, real + 1.0)
    assert same["fid"] == pytest.approx(0.0, abs=1e-2) and far["fid"] > 1.0


def test_utility_on_tiny_run(tiny_run, tmp_path):
    loaded = load_run(tiny_run)
    cfg = UtilityConfig(samples=32, sample_steps=4, classifier_epochs=2)
    u = compute_utility(loaded, cfg, tmp_path / "cache", tmp_path / "samples.png")
    assert u["fid_label"] == "FID (digits-classifier features)"
    assert u["fid"] > 0 and u["fid_floor"] >= 0 and (tmp_path / "samples.png").is_file()
    assert list((tmp_path / "cache").glob("digits-classifier-*/model.safetensors"))  # cached for the next run
    again = compute_utility(loaded, cfg, tmp_path / "cache")
    assert again["fid"] == pytest.approx(u["fid"], rel=1e-4)  # seeded: same samples, same features


def test_samples_per_batch_generator_keeps_one_batch_runs_unchanged(tiny_run):
    """One seeded generator per sampling batch: a run whose samples fit in one batch draws exactly what a single
    generator seeded with utility.seed draws (so earlier one-batch FIDs stand); more batches are each reproducible
    alone, which is what lets processes draw disjoint batches."""
    from diffmia.evaluate.fid import batch_seed, generate_samples

    loaded = load_run(tiny_run)
    one = generate_samples(loaded, UtilityConfig(samples=20, sample_steps=3, batch_size=32))
    plain = loaded.target.generate(20, steps=3, generator=torch.Generator().manual_seed(0), batch_size=32)
    assert torch.equal(one, plain)
    many = generate_samples(loaded, UtilityConfig(samples=20, sample_steps=3, batch_size=8))
    third = loaded.target.generate(4, steps=3, generator=torch.Generator().manual_seed(batch_seed(0, 2)), batch_size=8)
    assert torch.equal(many[16:], third)
    assert torch.allclose(many[:8], plain[:8], atol=1e-3)  # the same noise; a batch of 8 sums in another order


def test_utility_over_two_processes_is_identical_to_one(tiny_run, tmp_path):
    """`diffmia utility` under torchrun (2 gloo processes, each drawing every other batch) writes the same FID, KID
    and floors as one process, and records processes: 2."""
    import json
    import os
    import subprocess
    import sys

    from tests.launch import torchrun, worker_logs

    sets = [
        "--set",
        "samples=40",
        "--set",
        "batch_size=16",
        "--set",
        "sample_steps=3",
        "--set",
        "classifier_epochs=2",
        "--no-progress",
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1", DIFFMIA_THREADS="1")
    subprocess.run(
        [sys.executable, "-m", "diffmia", "utility", str(tiny_run), "--out", str(tmp_path / "one.json"), *sets],
        env=env,
        check=True,
        capture_output=True,
    )
    done = torchrun(["utility", str(tiny_run), "--out", str(tmp_path / "two.json"), *sets], tmp_path / "logs")
    assert done.returncode == 0, worker_logs(done, tmp_path / "logs")
    one, two = (json.loads((tmp_path / f).read_text()) for f in ("one.json", "two.json"))
    assert two.pop("processes") == 2 and "processes" not in one
    for key in ("fid", "kid", "fid_floor", "kid_floor", "generated"):
        assert one[key] == two[key]


def save_tiny_clip(path):
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    cfg = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=32,
        patch_size=8,
        projection_dim=16,
    )
    torch.manual_seed(0)
    CLIPVisionModelWithProjection(cfg).save_pretrained(path)


def save_tiny_dinov2(path):
    from transformers import Dinov2Config, Dinov2Model

    cfg = Dinov2Config(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37, image_size=28, patch_size=7
    )
    torch.manual_seed(0)
    Dinov2Model(cfg).save_pretrained(path)


@pytest.mark.parametrize("kind, save, dim", [("clip", save_tiny_clip, 16), ("dinov2", save_tiny_dinov2, 32)])
def test_transformers_features_from_local_folder(tmp_path, kind, save, dim):
    save(tmp_path / kind)
    net = TransformersImageFeatures(tmp_path / kind, kind)
    assert net.num_features == dim
    feats = net(torch.rand(3, 1, 8, 8) * 2 - 1)  # grayscale digits are repeated to RGB and resized
    assert feats.shape == (3, dim)
    d = distances(net, torch.rand(40, 3, 8, 8) * 2 - 1, torch.rand(40, 3, 8, 8) * 2 - 1)
    assert d["fid"] >= 0


def test_missing_feature_folder_and_inception_errors(tmp_path):
    with pytest.raises(FeatureError, match="config.json missing"):
        TransformersImageFeatures(tmp_path / "nothing", "clip")
    with pytest.raises(FeatureError, match="torch-fidelity|weights file"):
        inception_fid_metric(tmp_path / "pt_inception.pth")


def test_feature_classifier_depends_on_its_seed_only():
    from diffmia.core.config import DataConfig
    from diffmia.evaluate.features import train_digits_classifier
    from diffmia.targets.data import load_dataset

    images = load_dataset(DataConfig())
    torch.manual_seed(123)
    a, _ = train_digits_classifier(images, list(range(200)), None, epochs=1)
    torch.rand(7)  # disturb the global generator
    b, _ = train_digits_classifier(images, list(range(200)), None, epochs=1)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
