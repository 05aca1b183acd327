"""Evaluation protocol: KID settings, inpainting on composites, disjoint image sets, fixed metric seeds, sample time."""

from __future__ import annotations

import contextlib
import math
import time
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import vqbench
from vqbench import latents
from vqbench.errors import ConfigError
from vqbench.metrics import timing
from vqbench.metrics.fid import KIDMetric, kid_all_pairs, kid_from_features
from vqbench.metrics.inpainting import InpaintingConfig, InpaintingMetric, kept_token_pixels, psnr_in_region
from vqbench.metrics.masks import latent_regenerate_mask, pixel_masks
from vqbench.metrics.timing import PeakMemory, _rss_bytes, time_sampling
from vqbench.runner.data import DataBundle
from vqbench.runner.evaluate import EvalContext, metric_configs, reference_split
from vqbench.runner.schema import MetricsSection, SamplingSection

FACTOR, VOCAB = 4, 16


def configured(settings: dict, num_samples: int = 24, **metrics) -> tuple[MetricsSection, dict]:
    defaults = {"enabled": list(settings), "feature_extractor": "random-cnn", "num_real": 30, "settings": settings}
    section = MetricsSection(**(defaults | metrics))
    return section, metric_configs(section, vqbench.registries(), SamplingSection(num_samples=num_samples))


def test_sample_counts_that_leave_a_metric_no_value_are_refused_before_any_work():
    with pytest.raises(ConfigError, match=r"metrics\.prdc\.nearest_k: 5 needs more than 5 images, but sampling\.num_samples = 3"):
        configured({"prdc": {}}, num_samples=3)
    with pytest.raises(ConfigError, match=r"metrics\.prdc\.nearest_k: 5 needs more than 5 images, but metrics\.num_real = 5"):
        configured({"prdc": {}}, num_real=5)
    configured({"prdc": {}}, num_samples=6, num_real=6)  # k + 1 images suffice
    with pytest.raises(ConfigError, match=r"sampling\.num_samples: FID needs at least 2 images"):
        configured({"fid": {}}, num_samples=1)
    configured({"fid": {}}, num_samples=2)


@pytest.mark.parametrize("threshold", [-0.1, 1.0, 1.5])
def test_cell_threshold_outside_the_unit_interval_is_refused(threshold):
    with pytest.raises(ConfigError, match=r"metrics\.inpainting\.cell_threshold: must lie in \[0, 1\)"):
        configured({"inpainting": {"cell_threshold": threshold}})
    configured({"inpainting": {"cell_threshold": 0.5}})


def test_kid_subset_larger_than_a_set_is_refused_naming_the_key_and_both_numbers():
    with pytest.raises(ConfigError, match=r"metrics\.kid\.subset_size: 25 exceeds sampling\.num_samples = 24"):
        configured({"kid": {"subset_size": 25}})
    with pytest.raises(ConfigError, match=r"metrics\.kid\.subset_size: 31 exceeds metrics\.num_real = 30"):
        configured({"kid": {"subset_size": 31}}, num_real=30)
    configured({"kid": {"subset_size": 24}})  # fits both
    g = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match="subset_size 50 exceeds the feature sets"):
        kid_from_features(torch.randn(60, 4, generator=g), torch.randn(40, 4, generator=g), subsets=3, subset_size=50)


def test_kid_subsets_use_the_metric_seed_not_the_cell_seed():
    g = torch.Generator().manual_seed(1)
    real, fake = torch.randn(80, 6, generator=g), torch.randn(80, 6, generator=g) + 0.3
    features = SimpleNamespace(real=real, fake=lambda: fake)
    config = KIDMetric.Config(subsets=5, subset_size=40)
    a = KIDMetric().compute(SimpleNamespace(features=features, seed=0), config)
    b = KIDMetric().compute(SimpleNamespace(features=features, seed=1), config)
    assert a == b and a["kid_subset_std"] > 0


def test_kid_over_all_pairs_equals_torch_fidelity_on_equal_sets():
    g = torch.Generator().manual_seed(2)
    real, fake = torch.randn(30, 5, generator=g), torch.randn(30, 5, generator=g) * 1.3
    mean, std = kid_from_features(real, fake, subsets=1, subset_size=30)  # one subset = every item
    assert kid_all_pairs(real, fake) == pytest.approx(mean, rel=1e-12) and std == 0.0


def test_inpainting_and_reference_sets_are_disjoint_and_a_small_split_is_refused(tmp_path):
    codes = np.zeros((40, 2, 2), dtype=np.int64)
    codes[:, 0, 0] = np.arange(40)  # every item identifiable
    latents.write(tmp_path / "test", codes, 64)
    test = latents.open(tmp_path / "test")
    section, metrics = configured({"inpainting": {"num_images": 8}, "kid": {"subset_size": 10}}, num_real=30)
    assert reference_split(section, metrics, len(test)) == 30
    with pytest.raises(ConfigError, match=r"metrics\.num_real: 33 reference images \+ 8 inpainting images .* exceed the 40"):
        reference_split(MetricsSection(num_real=33), metrics, len(test))
    data = DataBundle(test, test)
    decode = lambda c: c.to(torch.uint8)[:, None].expand(-1, 3, -1, -1)  # noqa: E731
    ctx = EvalContext(None, None, data, torch.zeros(1), {}, 0, torch.device("cpu"), None, {}, 16)
    ctx.decode = decode
    _, inpaint_codes, _ = ctx.inpainting_inputs(8)
    reference_codes = torch.cat([c for _, c in data.reference_batches(30, 7, decode)])
    assert torch.equal(inpaint_codes, test.tensor()[-8:]) and torch.equal(reference_codes, test.tensor()[:30])


class CellDecoder:
    """A tokenizer whose every f×f pixel cell depends on its own token only."""

    downsample_factor = FACTOR

    def decode_uint8(self, codes: torch.Tensor) -> torch.Tensor:
        cells = (codes.long() * 13 % 256).to(torch.uint8)
        return cells.repeat_interleave(FACTOR, 1).repeat_interleave(FACTOR, 2)[:, None].expand(-1, 3, -1, -1).clone()


def inpainting_context(seed: int, images: torch.Tensor, codes: torch.Tensor) -> SimpleNamespace:
    tokenizer = CellDecoder()
    features = lambda x: F.avg_pool2d(x.double(), 4).flatten(1)  # noqa: E731
    real = features(torch.randint(0, 256, (20, 3, 16, 16), generator=torch.Generator().manual_seed(9), dtype=torch.uint8))
    return SimpleNamespace(
        prior=SimpleNamespace(supports_inpainting=True), tokenizer=tokenizer, device=torch.device("cpu"), seed=seed,
        notes={}, artifacts={}, features=SimpleNamespace(real=real, of=features),
        inpainting_inputs=lambda n: (images, codes, None), decode=tokenizer.decode_uint8,
        inpaint=lambda c, keep, labels: torch.where(keep, c, (c + 1) % VOCAB),
    )  # fmt: skip


@pytest.fixture
def inpainting_case(monkeypatch):
    monkeypatch.setattr("vqbench.metrics.lpips_net.backbone_weights_available", lambda net: False)
    g = torch.Generator().manual_seed(3)
    codes = torch.randint(0, VOCAB, (6, 4, 4), generator=g)
    noise = torch.randint(-20, 21, (6, 3, 16, 16), generator=g)
    images = (CellDecoder().decode_uint8(codes).int() + noise).clamp(0, 255).to(torch.uint8)  # tokenizer error
    return images, codes


def test_inpainting_scores_composites_and_kept_tokens_against_the_reconstruction(inpainting_case):
    images, codes = inpainting_case
    config = InpaintingConfig(masks=["strokes"], num_images=6)
    ctx = inpainting_context(0, images, codes)
    out = InpaintingMetric().compute(ctx, config)
    _, _, shown = ctx.artifacts["inpaint_strokes"]
    pixel = pixel_masks("strokes", 16, 6, seed=config.seed)[:4, None].expand_as(shown)
    inpainted = ctx.decode(ctx.inpaint(codes, ~latent_regenerate_mask(pixel_masks("strokes", 16, 6), FACTOR), None))[:4]
    assert torch.equal(shown[~pixel], images[:4][~pixel]) and torch.equal(shown[pixel], inpainted[pixel])
    # kept tokens decode exactly as in the reconstruction; the strokes cut through cells, so pixels outside the
    # mask but inside regenerated tokens (which differ) are excluded
    assert out["inpaint_strokes_psnr"] > 140
    mask = pixel_masks("strokes", 16, 6)
    keep = ~latent_regenerate_mask(mask, FACTOR)
    result = ctx.decode(ctx.inpaint(codes, keep, None))
    assert (~mask & ~kept_token_pixels(keep, FACTOR)).any()
    assert psnr_in_region(ctx.decode(codes), result, ~mask).max() < 60  # the unmasked region is not the kept one
    assert out["inpaint_strokes_lpips"] > 0 and math.isfinite(out["inpaint_strokes_kid"])
    assert "inpaint_strokes_fid" not in out and "N=6" in InpaintingMetric().columns(config)["inpaint_strokes_kid"].label


def test_inpainting_metrics_do_not_depend_on_the_cell_seed(inpainting_case):
    images, codes = inpainting_case
    config = InpaintingConfig(masks=["strokes", "center"], num_images=6)
    a = InpaintingMetric().compute(inpainting_context(0, images, codes), config)
    b = InpaintingMetric().compute(inpainting_context(5, images, codes), config)
    assert a == b


def test_inpainting_fid_needs_as_many_images_as_feature_dimensions():
    with pytest.raises(ConfigError, match=r"metrics\.inpainting\.fid: FID of 64 images with 256-d features"):
        configured({"inpainting": {"fid": True, "num_images": 64}})
    configured({"inpainting": {"fid": True, "num_images": 256}}, num_real=30)


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class RecordingPrior(nn.Module):
    """Samples zeros; advances a fake clock by scripted durations and records the precision each call ran at."""

    latent_shape = (2, 2)

    def __init__(self, clock: FakeClock, durations: list[float]):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(3))
        self.clock, self.durations, self.seen = clock, list(durations), []

    def sample(self, n, shape, generator, labels=None, **options):
        self.seen.append((n, torch.is_autocast_enabled("cpu"), self.weight.dtype))
        self.clock.now += self.durations.pop(0)
        return torch.zeros(n, *shape, dtype=torch.long)


class RecordingTokenizer(nn.Module):
    def __init__(self, clock: FakeClock, mib: int = 0):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(3))
        self.clock, self.mib, self.seen = clock, mib, []

    def decode(self, codes):
        self.seen.append((len(codes), torch.is_autocast_enabled("cpu"), self.weight.dtype))
        self.clock.now += 0.5
        return torch.ones(self.mib * 2**18)  # touched float32 memory: mib MiB


def test_sample_time_is_the_median_of_repeats_after_a_warm_up_at_the_run_precision():
    from vqbench.precision import make_autocast

    clock = FakeClock()
    prior = RecordingPrior(clock, [1000.0, 2.0, 10.0, 3.0, 1.0, 7.0])  # warm-up, then five timed passes
    tokenizer = RecordingTokenizer(clock)
    cpu = torch.device("cpu")
    out = time_sampling(prior, tokenizer, 4, 1, 5, 0, cpu, make_autocast(cpu, "bf16"), "bf16", {}, clock=clock)
    assert out["sample_s_per_img"] == pytest.approx(3.0 / 4) and out["decode_s_per_img"] == pytest.approx(0.5 / 4)
    assert out["total_s_per_img"] == pytest.approx(3.5 / 4)
    assert prior.seen == [(4, True, torch.bfloat16)] * 6 and tokenizer.seen == [(4, True, torch.bfloat16)] * 6
    assert prior.weight.dtype == tokenizer.weight.dtype == torch.float32  # restored afterwards


def test_sample_time_peak_memory_keeps_nothing_between_batches():
    clock = FakeClock()
    prior, tokenizer = RecordingPrior(clock, [0.0] * 17), RecordingTokenizer(clock, mib=8)
    cpu = torch.device("cpu")
    before = _rss_bytes() / 2**20
    out = time_sampling(prior, tokenizer, 2, 8, 2, 0, cpu, contextlib.nullcontext, "fp32", {}, clock=clock)
    assert 0.95 * before <= out["peak_mem_mb"] < before + 40  # the process's peak RSS: one batch's 8 MiB more, not 16 batches' 128


def test_peak_memory_on_cpu_is_the_process_peak_rss_during_the_block():
    block = 200 * 2**20
    before = _rss_bytes() / 2**20
    with PeakMemory(torch.device("cpu")) as memory:
        held = torch.ones(block // 4)  # touched: resident
        time.sleep(0.05)  # several polls see it
        del held  # freed before the block ends: only the poll saw the peak
        time.sleep(0.02)
    assert memory.peak_mb > 0 and memory.meaning == "process peak RSS"
    assert memory.peak_mb >= before + 0.95 * block / 2**20  # absolute: what the process held before, plus the block
    assert _rss_bytes() / 2**20 < before + 100  # (the block's memory went back to the system, so the poll mattered)


def test_peak_memory_without_proc_is_the_process_lifetime_peak(monkeypatch):
    now = _rss_bytes() / 2**20
    monkeypatch.setattr(timing.os.path, "exists", lambda path: False)
    with PeakMemory(torch.device("cpu")) as memory:
        pass
    assert memory.peak_mb >= now * 0.99 and memory.meaning == "process lifetime peak RSS (getrusage)"
