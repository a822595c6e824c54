"""Attacks keep their tensors on the target's device, and only scores (or the features an attack keeps between
batches) come back to the CPU. Checked without a GPU: the target is copied onto PyTorch's meta device, where mixing
in a tensor of another device raises as on CUDA, and nothing has data, so every copy back to the CPU is visible
(it is replaced here by zeros of the same shape and counted). On the CPU the scores are those of the CPU path."""

import copy

import pytest
import torch

from diffmia.attacks import ATTACKS, AttackBatch, build_attack
from diffmia.attacks.statistics import denoising_losses
from diffmia.targets.runs import load_run
from diffmia.targets.target import QueryCounter
from tests.conftest import SMALL

# attacks whose whole computation runs on the device: their scores are still device tensors when returned
ON_DEVICE = {"naive_loss", "noise_aggregation", "pia", "pian", "secmi", "sima", "rediffuse", "clid"}


@pytest.fixture(scope="module")
def loaded(short_run):
    return load_run(short_run)


def on_meta(target):
    """A copy of `target` whose every model is on the meta device (the original is left as it is)."""
    meta = copy.copy(target)
    for name, value in vars(target).items():
        if isinstance(value, torch.nn.Module):
            setattr(meta, name, copy.deepcopy(value).to("meta"))
        elif isinstance(value, dict):  # caches of text features: computed again, on the device
            setattr(meta, name, {})
    meta.device, meta.queries = torch.device("meta"), QueryCounter()
    return meta


@pytest.fixture
def host_copies(monkeypatch):
    """Every copy of a meta tensor to the CPU, by shape (the copy is zeros of that shape)."""
    copies = []
    real_cpu, real_tolist = torch.Tensor.cpu, torch.Tensor.tolist

    def cpu(self, *args, **kwargs):
        if self.is_meta:
            copies.append(tuple(self.shape))
            return torch.zeros(self.shape, dtype=self.dtype)
        return real_cpu(self, *args, **kwargs)

    def tolist(self):
        return cpu(self).tolist() if self.is_meta else real_tolist(self)

    monkeypatch.setattr(torch.Tensor, "cpu", cpu)
    monkeypatch.setattr(torch.Tensor, "tolist", tolist)
    return copies


def check_on_meta(loaded, name, host_copies, captions=None):
    attack = build_attack(name, SMALL.get(name), seed=3)
    attack.prepare(loaded, loaded.run.root / ".cache")  # references, tuning, helpers: on the real target
    ids = loaded.manifest.indices("members")[:3] + loaded.manifest.indices("nonmembers")[:3]
    caps = [loaded.images.captions[i] for i in ids] if captions else None
    batch = AttackBatch(loaded.images.tensor(ids, loaded.resolution), ids, caps).to("meta")
    meta = on_meta(loaded.target)
    scores = attack.score(meta, batch)  # raises on any tensor of another device mixed in
    parts = [scores[c] for c in attack.components] if attack.components else [scores]
    assert all(p.shape == (6,) for p in parts)
    assert meta.queries.sample_queries == attack.queries_per_sample(meta) * 6
    if name in ON_DEVICE:
        assert all(p.is_meta for p in parts), f"{name}: scores computed on the CPU"
        assert all(len(shape) > 1 for shape in host_copies), f"{name}: a value copied back mid-way: {host_copies}"
    return scores


# GSA's prepare computes gradient norms of every audited image (seconds); its device part is checked on its own below
PIXEL = [n for n in ATTACKS.names() if not ATTACKS.get(n).needs_captions and n != "gsa"]


@pytest.mark.parametrize("name", PIXEL)
def test_pixel_attacks_stay_on_the_device(loaded, name, host_copies):
    check_on_meta(loaded, name, host_copies)


@pytest.mark.parametrize("name", ["clid", "sd_mia", "naive_loss"])
def test_text_attacks_stay_on_the_device(text_run, name, host_copies):
    check_on_meta(text_run, name, host_copies, captions=True)


def test_the_shared_statistic_copies_only_its_result(loaded, host_copies):
    ids = loaded.manifest.indices("members")[:4]
    batch = AttackBatch(loaded.images.tensor(ids, loaded.resolution), ids)  # on the CPU: moved per chunk
    out = denoising_losses(on_meta(loaded.target), batch, 100, 2, seed=0, batch_size=2)
    assert out.shape == (4, 2) and host_copies == [(2, 2), (2, 2)]


def test_gsa_gradients_stay_on_the_device(loaded, host_copies):
    from diffmia.attacks.gsa import gradient_norms

    ids = loaded.manifest.indices("members")[:2]
    noises = torch.randn((3, 2, *loaded.target.sample_shape), generator=torch.Generator().manual_seed(0))
    norms = gradient_norms(on_meta(loaded.target), loaded.images.tensor(ids, loaded.resolution), [10, 400, 900], noises)
    assert norms.shape[0] == 2 and host_copies == [tuple(norms.shape)]  # the norms alone come back


def test_generation_runs_on_the_device_and_returns_images(loaded, host_copies):
    images = on_meta(loaded.target).generate(3, steps=4, sampler="ddpm")
    assert images.shape == (3, *loaded.target.image_shape) and host_copies == [images.shape]
