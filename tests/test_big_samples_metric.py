"""The ``big_samples`` metric: seam geometry, the horizontal bigram, and known truth on a Markov source with the exact
denoiser of tests/test_absorbing_big.py — overlapping windows give seams like the interior (latent statistic ≈ 0,
seam-crop FID like the left crop's), tiling gives visible seams; n/a for priors without ``sample_big``; a benchmark
runs it."""

from __future__ import annotations

import contextlib
import math
from types import SimpleNamespace

import pandas as pd
import pytest
import torch
import yaml

import vqbench
from vqbench.cli import main
from vqbench.config import parse
from vqbench.errors import ConfigError
from vqbench.interfaces import FeatureExtractor
from vqbench.metrics.big_samples import BigSamplesMetric, HorizontalBigram, crops, horizontal_pairs, seam_columns
from vqbench.metrics.features import FeatureSet

from .test_absorbing_big import markov_prior, one_thread  # noqa: F401 - the fixture applies here too

F = 2  # pixels per token side of the fake decoder


def test_seams_pairs_and_crops():
    assert seam_columns(5, 2) == [4] and seam_columns(4, 3) == [3, 7]
    grids = torch.arange(2 * 2 * 6).view(2, 2, 6)
    assert horizontal_pairs(grids, [4]).tolist() == [[4, 5], [10, 11], [16, 17], [22, 23]]
    assert len(horizontal_pairs(grids)) == 2 * 2 * 5
    images = torch.arange(10 * F).view(1, 1, 1, -1).expand(3, 3, 2, -1)  # pixel column index
    cut = crops(images, 5, 2)
    assert cut["left"][0, 0, 0].tolist() == list(range(0, 10)) and cut["right"][0, 0, 0].tolist() == list(range(10, 20))
    assert cut["seam"][0, 0, 0].tolist() == list(range(6, 16))  # tokens 3–7: the seam between tokens 4 and 5 inside


def test_the_bigram_is_the_smoothed_count_ratio():
    grids = torch.tensor([[[0, 1, 1], [0, 1, 0]]])  # pairs 01, 11, 01, 10; codes 0:3, 1:3, 2:0
    bigram = HorizontalBigram(grids, 3, smoothing=2.0)
    unigram = torch.tensor([3.5, 3.5, 0.5]) / 7.5
    expected = [(2 + 2 * unigram[1]) / (2 + 2), (1 + 2 * unigram[0]) / (2 + 2), (0 + 2 * unigram[2]) / (0 + 2)]  # 0→1, 1→0, 2→2
    torch.testing.assert_close(bigram.bits(torch.tensor([[0, 1], [1, 0], [2, 2]])), -torch.log2(torch.stack(expected)).double())


class MiddlePairFeatures(FeatureExtractor):
    """Features of a training-size crop (fake decodes: code·60 at F×F pixels): fixed random 3-d embeddings of the two
    codes of the middle column pair of every row. Their covariance sees whether the pair follows the source."""

    dims, real_weights, description = 18, True, "middle-pair embedding"

    def __init__(self, width: int):
        super().__init__()
        self.width = width
        self.register_buffer("embed", torch.randn(4, 3, generator=torch.Generator().manual_seed(0)))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        codes = (images[:, 0, ::F, ::F].long() // 60).clamp(max=3)
        middle = codes[:, :, self.width // 2 - 1 : self.width // 2 + 1]  # B×rows×2
        return self.embed[middle].flatten(1).double()


def context(prior, source, images: bool) -> SimpleNamespace:
    train, test = torch.from_numpy(source.generate(3000, 0)), torch.from_numpy(source.generate(500, 1))
    decode = lambda codes: (codes * 60).to(torch.uint8).repeat_interleave(F, 1).repeat_interleave(F, 2)[:, None].expand(-1, 3, -1, -1)  # noqa: E731
    features = None
    if images:
        extractor = MiddlePairFeatures(prior.latent_shape[1])
        features = FeatureSet(extractor, extractor(decode(test)), lambda: [], torch.device("cpu"), 0)
    return SimpleNamespace(
        prior=prior, tokenizer=object() if images else None, features=features, decode=decode, data=SimpleNamespace(train=SimpleNamespace(tensor=lambda: train)),
        test_codes=test, options={}, batch_size=200, seed=0, device=torch.device("cpu"), autocast=contextlib.nullcontext, notes={}, sample_labels=None,
    )  # fmt: skip


def big_samples(ctx, **params) -> dict[str, float]:
    return BigSamplesMetric().compute(ctx, parse(BigSamplesMetric.Config, {"num_samples": 400, **params}, "metrics.big_samples"))


def test_overlapping_windows_give_seams_like_the_interior_and_tiling_does_not():
    """Known truth (3×5 Markov source, 3×10 samples). Latent: the seam pairs' bigram bits exceed the inside pairs' by
    little with stride 1 (the mixture's dilution, ≈ 0.03 bits) and by more than a bit with tiling (stride 5)."""
    prior, source = markov_prior(3, 5)
    ctx = context(prior, source, images=False)
    overlap = big_samples(ctx, window_step=1)
    assert abs(overlap["big_seam_bits"]) < 0.25 and all(math.isnan(overlap[f"big_fid_{k}"]) for k in ("left", "seam", "right"))
    assert ctx.notes["big_samples"].startswith("400 samples of 3×10 latents from 3×5 windows (stride 1, random order")
    assert ctx.notes["big_samples"].endswith("FID n/a without images")
    tiled = big_samples(ctx, window_step=5)
    assert tiled["big_seam_bits"] > 1.0 and tiled["big_seam_bits"] > 5 * abs(overlap["big_seam_bits"]), (tiled, overlap)


def test_seam_crop_fid_sees_tiling_and_the_left_crop_does_not():
    prior, source = markov_prior(3, 5)
    ctx = context(prior, source, images=True)
    overlap, tiled = big_samples(ctx, window_step=1), big_samples(ctx, window_step=5)
    assert overlap["big_fid_seam"] < 2 * overlap["big_fid_left"] + 0.05, overlap
    assert tiled["big_fid_seam"] > 3 * max(overlap["big_fid_seam"], 0.05), (tiled, overlap)
    assert tiled["big_fid_left"] < 2 * overlap["big_fid_left"] + 0.05  # the left block is one window either way


def test_priors_without_big_sampling_are_na_with_the_reason():
    cls = vqbench.registries().priors.get("independent")
    prior = cls(parse(cls.Config, {}, "params"), 4, (3, 5))
    ctx = SimpleNamespace(prior=prior, notes={})
    values = BigSamplesMetric().compute(ctx, parse(BigSamplesMetric.Config, {}, "metrics.big_samples"))
    assert len(values) == 4 and all(math.isnan(v) for v in values.values())
    assert ctx.notes["big_samples"] == "n/a: IndependentPrior cannot sample grids larger than its training grid (no sample_big)"
    with pytest.raises(ConfigError, match=r"metrics\.big_samples\.width_factor"):
        parse(BigSamplesMetric.Config, {"width_factor": 1}, "metrics.big_samples")


def test_a_benchmark_reports_big_samples_for_absorbing_and_na_for_others(smoke_config, tmp_path):
    """Through the CLI: the tiny VQ-GAN decodes 2×-wide grids; independent gets n/a."""
    backbone = {"name": "transformer", "dim": 32, "depth": 1, "heads": 2, "dim_head": 16}
    smoke_config["priors"] = [{"name": "independent"}, {"name": "absorbing", "params": {"backbone": backbone, "total_steps": 8}}]
    smoke_config["metrics"]["enabled"] = ["big_samples"]  # uses_images: the run extracts image features for it alone
    smoke_config["metrics"]["big_samples"] = {"num_samples": 12, "window_step": 2, "steps": 8}
    path = tmp_path / "bench.yaml"
    path.write_text(yaml.safe_dump(smoke_config))
    assert main(["run", str(path)]) == 0
    table = pd.read_csv(tmp_path / "out" / "report.csv", index_col="prior")
    columns = ["big_fid_left", "big_fid_seam", "big_fid_right", "big_seam_bits"]
    assert table.loc["absorbing", columns].notna().all() and table.loc["independent", columns].isna().all()
    smoke_config["priors"] = smoke_config["priors"][1:]  # latent-only data: the latent statistic alone
    smoke_config["dataset"] = {"name": "synthetic_latents", "params": {"kind": "markov", "h": 4, "w": 4, "codebook_size": 16, "count": 64}}
    smoke_config.pop("tokenizer", None)
    smoke_config["out"] = str(tmp_path / "latent_only")
    path.write_text(yaml.safe_dump(smoke_config))
    assert main(["run", str(path)]) == 0
    table = pd.read_csv(tmp_path / "latent_only" / "report.csv", index_col="prior")
    assert table.loc["absorbing", columns[:3]].isna().all() and pd.notna(table.loc["absorbing", "big_seam_bits"])
