"""Metrics against reference implementations and known values."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vqbench.metrics import fid_from_features, frechet_distance, kid_from_features, prdc
from vqbench.metrics.inpainting import masked_mean, psnr_in_region
from vqbench.metrics.latent_stats import codebook_stats, histogram, kl_bits, perplexity, unique_rate
from vqbench.metrics.masks import MASK_KINDS, latent_regenerate_mask, pixel_masks
from vqbench.metrics.prdc import pairwise_distances


@pytest.mark.parametrize("k", [3, 5])
def test_prdc_matches_the_reference_package(k):
    reference = pytest.importorskip("prdc")
    rng = np.random.default_rng(k)
    real = rng.normal(size=(300, 16)).astype(np.float32)
    fake = (rng.normal(size=(250, 16)) * 1.2 + 0.3).astype(np.float32)
    expected = reference.compute_prdc(real_features=real, fake_features=fake, nearest_k=k)
    got = prdc(real, fake, nearest_k=k, chunk=64)  # small chunks exercise the chunked path
    for key in ("precision", "recall", "density", "coverage"):
        assert got[key] == pytest.approx(float(expected[key]), abs=1e-6), key


def test_prdc_matrix_product_distances_match_the_reference_package_on_wide_features():
    reference = pytest.importorskip("prdc")
    rng = np.random.default_rng(11)
    real = rng.normal(size=(400, 256)) * 3.0 + 5.0  # large norms: the ‖a‖² + ‖b‖² − 2ab path must stay exact
    fake = rng.normal(size=(300, 256)) * 3.3 + 5.1
    expected = reference.compute_prdc(real_features=real, fake_features=fake, nearest_k=5)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        got = prdc(real, fake, nearest_k=5, chunk=128, device=device)
        for key in ("precision", "recall", "density", "coverage"):
            assert got[key] == pytest.approx(float(expected[key]), abs=1e-6), (device, key)
    d = pairwise_distances(torch.from_numpy(real[:50]), torch.from_numpy(fake), chunk=16)
    assert torch.allclose(
        d, torch.cdist(torch.from_numpy(real[:50]), torch.from_numpy(fake), compute_mode="donot_use_mm_for_euclid_dist"), rtol=0, atol=1e-9
    )


def test_unique_sample_rate():
    grids = torch.tensor([[[0, 1], [2, 3]], [[0, 1], [2, 3]], [[3, 2], [1, 0]], [[0, 1], [2, 2]]])
    assert unique_rate(grids) == 0.75 and unique_rate(grids[:2]) == 0.5 and unique_rate(grids[2:]) == 1.0


def test_prdc_of_identical_sets_is_perfect_and_rejects_bad_shapes():
    x = np.random.default_rng(0).normal(size=(50, 4))
    out = prdc(x, x, nearest_k=3)
    assert out["precision"] == out["recall"] == out["coverage"] == 1.0
    with pytest.raises(ValueError, match="equal D"):
        prdc(x, x[:, :3])
    with pytest.raises(ValueError, match="nearest_k=5 needs more than 5"):
        prdc(x[:5], x[:5], nearest_k=5)


def test_frechet_distance_known_values():
    # 1-D Gaussians: (m1-m2)^2 + s1 + s2 - 2 sqrt(s1 s2)
    assert frechet_distance([1.0], [[4.0]], [3.0], [[9.0]]) == pytest.approx(4.0 + 4 + 9 - 2 * 6)
    mu, sigma = np.zeros(3), np.diag([1.0, 2.0, 3.0])
    assert frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0.0, abs=1e-9)
    assert frechet_distance(mu, sigma, mu + 1, sigma) == pytest.approx(3.0)


def test_fid_and_kid_from_features_detect_a_shift():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(400, 8, generator=g), torch.randn(400, 8, generator=g)
    shifted = b + 1.0
    assert fid_from_features(a, b) < 0.2 < 7.0 < fid_from_features(a, shifted)
    same, _ = kid_from_features(a, b, subsets=20, subset_size=100)
    far, _ = kid_from_features(a, shifted, subsets=20, subset_size=100)
    assert abs(same) < 0.02 and far > 0.1


def test_pixel_masks_map_to_latent_masks():
    masks = pixel_masks("center", 16, 2)
    assert masks.dtype == torch.bool and masks.shape == (2, 16, 16) and masks[0, 8, 8] and not masks[0, 0, 0]
    upper = latent_regenerate_mask(pixel_masks("upper_half", 16, 1), 4)
    assert upper[0, :2].all() and not upper[0, 2:].any()
    one_pixel = torch.zeros(1, 8, 8, dtype=torch.bool)
    one_pixel[0, 5, 1] = True
    assert latent_regenerate_mask(one_pixel, 4).nonzero().tolist() == [[0, 1, 0]]  # any masked pixel regenerates
    assert not latent_regenerate_mask(one_pixel, 4, cell_threshold=0.5).any()
    strokes = pixel_masks("strokes", 32, 3, seed=1)
    assert torch.equal(strokes, pixel_masks("strokes", 32, 3, seed=1)) and not torch.equal(strokes[0], strokes[1])
    assert 0.02 < strokes.float().mean() < 0.8
    assert set(MASK_KINDS) == {"center", "upper_half", "lower_half", "strokes"}


def test_psnr_and_masked_mean():
    a = torch.zeros(1, 3, 4, 4, dtype=torch.uint8)
    b = a.clone()
    b[..., :2, :] = 10  # differ only in the top half
    top = torch.zeros(1, 4, 4, dtype=torch.bool)
    top[:, :2] = True
    assert psnr_in_region(a, b, top).item() == pytest.approx(10 * np.log10(255**2 / 100))
    assert psnr_in_region(a, b, ~top).item() > 90
    assert masked_mean(torch.arange(16.0).view(1, 4, 4), top).item() == pytest.approx(3.5)


def test_latent_statistics():
    codes = torch.tensor([[[0, 1], [2, 3]]])
    assert perplexity(histogram(codes, 8)) == pytest.approx(4.0)
    assert codebook_stats(codes, 8) == {"used_codes": 4.0, "usage": 0.5, "perplexity": pytest.approx(4.0)}
    assert kl_bits(histogram(codes, 4), histogram(codes, 4) * 1000) == pytest.approx(0.0, abs=1e-3)
    assert kl_bits(torch.tensor([1.0, 0.0]), torch.tensor([1.0, 1.0]), smoothing=0.0) == pytest.approx(1.0)
