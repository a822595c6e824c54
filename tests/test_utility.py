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


def save_tiny_clip(path):
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    cfg = CLIPVisionConfig(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                           image_size=32, patch_size=8, projection_dim=16)
    torch.manual_seed(0)
    CLIPVisionModelWithProjection(cfg).save_pretrained(path)


def save_tiny_dinov2(path):
    from transformers import Dinov2Config, Dinov2Model

    cfg = Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
                       image_size=28, patch_size=7)
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
    from diffmia.config import DataConfig
    from diffmia.evaluate.features import train_digits_classifier
    from diffmia.targets.data import load_dataset

    images = load_dataset(DataConfig())
    torch.manual_seed(123)
    a, _ = train_digits_classifier(images, list(range(200)), None, epochs=1)
    torch.rand(7)  # disturb the global generator
    b, _ = train_digits_classifier(images, list(range(200)), None, epochs=1)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
