"""The LPIPS backbone's provenance: labelled where its numbers appear, and loadable from a local weights file."""

from __future__ import annotations

import pytest
import torch
import torchvision

from vqbench.errors import ConfigError
from vqbench.metrics.inpainting import InpaintingConfig, InpaintingMetric
from vqbench.metrics.lpips_net import load_lpips, lpips_weights_label


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))


@pytest.fixture
def alexnet_file(tmp_path):
    torch.manual_seed(3)
    path = tmp_path / "alexnet-local.pth"
    torch.save(torchvision.models.alexnet(weights=None).state_dict(), path)
    return path


def test_offline_columns_and_label_say_the_backbone_is_random(offline_hub):
    columns = InpaintingMetric().columns(InpaintingConfig(masks=["center"], num_images=4))
    assert "random backbone — not comparable" in columns["inpaint_center_lpips"].label
    assert "random backbone — not comparable" in columns["inpaint_center_lpips_in_mask"].label
    assert "random" not in columns["inpaint_center_kid"].label
    assert lpips_weights_label("alex") == "LPIPS-alex with a random backbone — not comparable"


def test_local_weights_are_loaded_into_the_backbone_and_labelled_by_file(offline_hub, alexnet_file):
    model, real = load_lpips("alex", weights=str(alexnet_file))
    source = torch.load(alexnet_file, weights_only=True)
    backbone = model.model.net
    assert real
    assert torch.equal(backbone.slice1[0].weight, source["features.0.weight"])
    assert torch.equal(getattr(backbone.slice5, "10").bias, source["features.10.bias"])
    random, _ = load_lpips("alex")
    assert not torch.equal(random.model.net.slice1[0].weight, source["features.0.weight"])
    config = InpaintingConfig(masks=["center"], num_images=4, lpips_weights=str(alexnet_file))
    label = InpaintingMetric().columns(config)["inpaint_center_lpips"].label
    assert "random" not in label and lpips_weights_label("alex", str(alexnet_file)).endswith("alexnet-local.pth")


def test_unusable_weight_files_are_refused_by_key(offline_hub, tmp_path):
    with pytest.raises(ConfigError, match="lpips_weights.*does not exist"):
        InpaintingConfig(lpips_weights=str(tmp_path / "missing.pth")).validate("metrics.inpainting")
    (tmp_path / "empty.pth").write_bytes(b"")
    with pytest.raises(ConfigError, match="metrics.inpainting.lpips_weights.*not a readable weights file"):
        load_lpips("alex", weights=str(tmp_path / "empty.pth"), key="metrics.inpainting.lpips_weights")
    torch.save({"features.0.weight": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(ConfigError, match="lacks"):
        load_lpips("alex", weights=str(tmp_path / "other.pth"))


def test_the_cell_protocol_names_the_backbone_and_the_weights_files_content(offline_hub, alexnet_file):
    from vqbench.metrics.lpips_net import lpips_protocol

    metric = InpaintingMetric()
    offline = lpips_protocol({"inpainting": (metric, InpaintingConfig())})
    local = lpips_protocol({"inpainting": (metric, InpaintingConfig(lpips_weights=str(alexnet_file)))})
    assert offline == "LPIPS-alex with a random backbone — not comparable" and "sha256" in local
    torch.save({k: v + 1 for k, v in torch.load(alexnet_file, weights_only=True).items()}, alexnet_file)
    assert lpips_protocol({"inpainting": (metric, InpaintingConfig(lpips_weights=str(alexnet_file)))}) != local
    assert lpips_protocol({}) is None
