"""Feature extractors: torch-fidelity's Inception from a local weights file, offline behaviour, the random CNN."""

from __future__ import annotations

import pytest
import torch

import vqbench
from vqbench.errors import ConfigError


def extractor(name, **kwargs):
    return vqbench.registries().feature_extractors.get(name)(**kwargs).eval()


@pytest.fixture(scope="module")
def images():
    return torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))


def test_inception_loads_weights_from_a_local_path(tmp_path, images):
    random = extractor("inception-v3-compat", allow_random=True, seed=3)
    assert not random.real_weights and "RANDOM weights" in random.description
    torch.save(random.net.state_dict(), tmp_path / "inception.pth")
    loaded = extractor("inception-v3-compat", weights=str(tmp_path / "inception.pth"))
    assert loaded.real_weights and "inception.pth" in loaded.description
    with torch.inference_mode():
        a, b = random(images), loaded(images)
    assert a.shape == (2, 2048) and torch.equal(a, b)


def test_inception_offline_without_permission_or_file_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty hub cache
    with pytest.raises(ConfigError, match="allow_random_features=true"):
        extractor("inception-v3-compat")
    with pytest.raises(ConfigError, match=r"metrics\.feature_weights: Inception weights file .*missing\.pth.* not found"):
        extractor("inception-v3-compat", weights=str(tmp_path / "missing.pth"))


def test_random_initialisation_is_seeded(images):
    with torch.inference_mode():
        a = extractor("random-cnn", seed=1)(images)
        b = extractor("random-cnn", seed=1)(images)
        c = extractor("random-cnn", seed=2)(images)
    assert a.shape == (2, 256) and torch.equal(a, b) and not torch.equal(a, c)
