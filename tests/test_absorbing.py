"""Absorbing diffusion: losses, schedules, step skipping, MaskGIT counts, ELBO against a known entropy, inpainting."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from vqbench_plugins.absorbing import masked_at, maskgit_ratio, time_grid
from vqbench_plugins.synthetic_latents import SyntheticLatents, SyntheticLatentsConfig

import vqbench
from vqbench.config import parse

from .conftest import fit_for

SMALL = {"backbone": {"name": "transformer", "dim": 64, "depth": 2, "heads": 4, "dim_head": 16}}


def absorbing(vocab=8, shape=(4, 4), seed=0, **params):
    cls = vqbench.registries().priors.get("absorbing")
    torch.manual_seed(seed)
    return cls(parse(cls.Config, {**SMALL, **params}, "params"), vocab, shape).eval()


@pytest.mark.parametrize("loss", ["reweighted_elbo", "elbo", "mlm"])
def test_losses_match_their_definitions(loss):
    prior = absorbing(total_steps=10, loss=loss)
    codes = torch.randint(8, (6, 4, 4), generator=torch.Generator().manual_seed(1))
    torch.manual_seed(3)
    got = prior.loss(codes)
    torch.manual_seed(3)
    x0 = codes.flatten(1)
    t = torch.randint(1, 11, (6,))
    mask = torch.rand(x0.shape) < t[:, None] / 10
    ce = F.cross_entropy(prior.net(torch.where(mask, 8, x0)).transpose(1, 2), x0, reduction="none")
    summed = (ce * mask).sum(1)
    expected = {
        "reweighted_elbo": ((10 - t + 1) / 10 * summed).mean() / (16 * math.log(2)),  # Eq. 7
        "elbo": (10 / t * summed).mean() / (16 * math.log(2)),  # Eq. 6, 1/t divided by p(t) = 1/T
        "mlm": (summed / mask.sum(1).clamp(min=1)).mean() / math.log(2),
    }[loss]
    torch.testing.assert_close(got, expected.float())


def test_fixed_schedule_masks_exactly_the_scheduled_count():
    prior = absorbing(total_steps=8, mask_schedule="fixed")
    x0 = torch.zeros(4, 16, dtype=torch.long)
    mask = prior.mask_at(x0, torch.tensor([1, 3, 5, 8]))
    assert mask.sum(1).tolist() == [2, 6, 10, 16]


def test_step_skipping_with_all_steps_is_the_full_schedule():
    assert time_grid(8, 8) == [8, 7, 6, 5, 4, 3, 2, 1, 0]
    assert time_grid(4, 8) == [8, 6, 4, 2, 0]
    prior = absorbing(total_steps=16)
    prior.sample(3, (4, 4), torch.Generator().manual_seed(0))
    assert prior.trace == [masked_at(t, 16, 16) for t in range(15, -1, -1)] and prior.last_nfe == 16
    prior.sample(3, (4, 4), torch.Generator().manual_seed(0), steps=4)
    assert prior.trace == [12, 8, 4, 0] and prior.last_nfe == 4


def test_samples_fill_every_mask_with_valid_codes():
    prior = absorbing(total_steps=16)
    out = prior.sample(5, (4, 4), torch.Generator().manual_seed(2), steps=5, temperature=0.9)
    assert out.shape == (5, 4, 4) and out.dtype == torch.int64 and int(out.max()) < 8 and int(out.min()) >= 0


def test_maskgit_unmasks_exactly_the_scheduled_number_per_step():
    prior = absorbing(vocab=16, shape=(8, 8), sampler="maskgit", maskgit_steps=8)
    out = prior.sample(4, (8, 8), torch.Generator().manual_seed(0))
    expected, masked = [], 64
    for step in range(8):
        target = math.floor(64 * maskgit_ratio((step + 1) / 8, "cosine")) if step < 7 else 0
        masked = max(1, min(target, masked - 1)) if step < 7 else 0
        expected.append(masked)
    assert prior.trace == expected and expected[-1] == 0 and int(out.max()) < 16
    assert prior.last_nfe == 8
    prior.sample(2, (8, 8), torch.Generator().manual_seed(0), schedule="arccos", top_k=3)
    assert prior.trace[-1] == 0 and len(prior.trace) == 8


@pytest.mark.parametrize("sampler", ["absorbing", "maskgit"])
def test_inpainting_keeps_tokens_and_starts_at_the_matching_time(sampler):
    prior = absorbing(total_steps=16, sampler=sampler, maskgit_steps=6)
    codes = torch.randint(8, (4, 4, 4), generator=torch.Generator().manual_seed(1))
    keep = torch.ones(4, 4, 4, dtype=torch.bool)
    keep[:, 0, :2] = False  # 2 of 16 tokens to regenerate
    out = prior.inpaint(codes, keep, torch.Generator().manual_seed(2))
    assert torch.equal(out[keep], codes[keep]) and int(out.max()) < 8
    if sampler == "absorbing":
        assert prior.last_nfe == 2  # m(t) drops below 2 masked only at the last two time steps


def test_elbo_reaches_the_entropy_of_an_iid_source_and_is_not_below_it():
    source = SyntheticLatents(SyntheticLatentsConfig(kind="iid", h=4, w=4, codebook_size=8, count=4000))
    entropy = source.truth()["entropy_bits_per_token"]
    train, test = torch.from_numpy(source.generate(4000, 0)), torch.from_numpy(source.generate(2000, 1))
    prior = fit_for(absorbing(total_steps=16), train)
    with torch.inference_mode():
        elbo = prior.nll(test, generator=torch.Generator().manual_seed(0))
    assert "exact sum over all 16 time steps" in prior.nll_note
    # the noise floor: the true per-grid NLL of this test set, and its standard error
    true_nll = torch.from_numpy(-np.log2(source.probs)[test.numpy()].reshape(len(test), -1).mean(axis=1))
    noise = 4 * true_nll.std().item() / math.sqrt(len(test))
    assert abs(elbo.mean().item() - entropy) / entropy < 0.05
    assert elbo.mean().item() >= true_nll.mean().item() - noise


def test_elbo_reaches_the_entropy_of_a_markov_source():
    """Context matters here: a position-blind network (e.g. token embeddings at PyTorch's N(0, 1) init drowning the
    N(0, 0.02) positions) stays ~30 % above H at this budget; with GPT init it gets within 5 %."""
    source = SyntheticLatents(SyntheticLatentsConfig(kind="markov", h=4, w=4, codebook_size=8, count=4000))
    entropy = source.truth()["entropy_bits_per_token"]
    train, test = torch.from_numpy(source.generate(4000, 0)), torch.from_numpy(source.generate(1000, 1))
    prior = fit_for(absorbing(total_steps=16), train, steps=800)
    with torch.inference_mode():
        elbo = prior.nll(test, generator=torch.Generator().manual_seed(0))
    se = elbo.std().item() / math.sqrt(len(elbo))
    assert (elbo.mean().item() - entropy) / entropy < 0.05
    assert elbo.mean().item() > entropy - 4 * se


def test_monte_carlo_elbo_agrees_with_the_exact_sum():
    exact = absorbing(total_steps=24, elbo_exact_max=64)
    mc = absorbing(total_steps=24, elbo_exact_max=8, elbo_draws=8)
    codes = torch.randint(8, (64, 4, 4), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        a = exact.nll(codes, generator=torch.Generator().manual_seed(1)).mean().item()
        b = mc.nll(codes, generator=torch.Generator().manual_seed(2)).mean().item()
    assert "8 stratified time steps of 24" in mc.nll_note
    assert b == pytest.approx(a, rel=0.05)


class CopyOracle(torch.nn.Module):
    """The exact denoiser for constant grids: every token is the code of any unmasked token; all masked → uniform."""

    def __init__(self, vocab: int):
        super().__init__()
        self.vocab = vocab

    def forward(self, x: torch.Tensor, labels=None) -> torch.Tensor:
        visible = x < self.vocab
        code = torch.where(visible, x, 0).max(dim=1).values  # the grid's code (0 when nothing is visible)
        logits = 40.0 * F.one_hot(code, self.vocab).float()[:, None].expand(-1, x.shape[1], -1)
        return torch.where(visible.any(dim=1)[:, None, None], logits, torch.zeros_like(logits))


def constant_grid_elbo(vocab: int, n: int, total: int) -> float:
    """ELBO (bits/token) of the copy oracle on constant grids under random masking: a masked token costs log V only
    when all n are masked (probability (t/T)^n), so Σ_t (1/t)·n·(t/T)^n·log2 V / n."""
    return math.log2(vocab) * sum((t / total) ** n / t for t in range(1, total + 1))


def oracle_prior(**params):
    prior = absorbing(vocab=8, shape=(2, 2), **params)
    prior.net = CopyOracle(8)
    return prior


def constant_grids(count: int) -> torch.Tensor:
    codes = torch.randint(8, (count, 1, 1), generator=torch.Generator().manual_seed(0))
    return codes.expand(count, 2, 2).contiguous()


@pytest.mark.parametrize("params", [{"total_steps": 16}, {"total_steps": 64, "elbo_exact_max": 16, "elbo_draws": 16}])
def test_elbo_estimate_matches_the_closed_form_within_its_standard_error(params):
    """Every grid draws its own stratified time steps: the estimate is unbiased and its standard error honest.
    All draws sharing one time step are off by many standard errors for nearly every step."""
    prior, codes = oracle_prior(**params), constant_grids(512)
    truth = constant_grid_elbo(8, 4, params["total_steps"])
    for seed in range(3):
        with torch.inference_mode():
            elbo = prior.nll(codes, generator=torch.Generator().manual_seed(seed))
        stderr = prior.nll_stderr.pow(2).sum().sqrt().item() / len(codes)  # of the mean over grids
        assert 0 < stderr < 0.02
        assert abs(elbo.mean().item() - truth) < 4 * stderr


def test_elbo_uses_random_masks_whatever_the_training_schedule():
    """The ELBO is a bound only under the random schedule; ``fixed`` training must not change the estimate."""
    codes = constant_grids(64)
    with torch.inference_mode():
        a = oracle_prior(total_steps=64, elbo_exact_max=8, mask_schedule="fixed").nll(codes, generator=torch.Generator().manual_seed(1))
        b = oracle_prior(total_steps=64, elbo_exact_max=8, mask_schedule="random").nll(codes, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(a, b)


def test_fixed_schedule_masks_at_least_one_token():
    prior = absorbing(total_steps=64, mask_schedule="fixed")
    mask = prior.mask_at(torch.zeros(3, 16, dtype=torch.long), torch.tensor([1, 2, 64]))
    assert mask.sum(1).tolist() == [1, 1, 16]  # round(16/64) = 0 would train on nothing


def test_maskgit_reveals_one_token_per_step_and_leaves_one_for_the_next():
    """The reference guard: before the last step, mask_len = max(1, min(masked − 1, scheduled))."""
    prior = absorbing(vocab=16, shape=(4, 4), sampler="maskgit", maskgit_steps=8)
    codes = torch.randint(16, (2, 4, 4), generator=torch.Generator().manual_seed(0))
    keep = torch.ones_like(codes, dtype=torch.bool)
    keep[:, 0, :3] = False  # 3 masked tokens: the cosine schedule alone would empty the mask after three steps
    out = prior.inpaint(codes, keep, torch.Generator().manual_seed(1))
    expected, masked = [], 3
    for step in range(8):
        masked = max(1, min(math.floor(3 * maskgit_ratio((step + 1) / 8, "cosine")), masked - 1)) if step < 7 else 0
        expected.append(masked)
    assert prior.trace == expected == [2, 1, 1, 1, 1, 1, 1, 0] and prior.last_nfe == 8
    assert torch.equal(out[keep], codes[keep])
    prior.sample(3, (4, 4), torch.Generator().manual_seed(0), maskgit_steps=32)  # more steps than tokens
    steps = [16, *prior.trace]
    assert all(b < a or b == 1 for a, b in zip(steps, steps[1:])) and prior.trace[-1] == 0 and prior.last_nfe == 32


def test_inpainting_spreads_its_steps_evenly_from_the_start_time():
    """28 of 64 tokens to regenerate with 7 steps of T = 64: 4 tokens per step, not a first step revealing one."""
    prior = absorbing(vocab=8, shape=(8, 8), total_steps=64)
    codes = torch.randint(8, (2, 8, 8), generator=torch.Generator().manual_seed(1))
    keep = torch.ones(2, 8, 8, dtype=torch.bool)
    keep.view(2, -1)[:, :28] = False
    out = prior.inpaint(codes, keep, torch.Generator().manual_seed(2), steps=7)
    assert prior.trace == [24, 20, 16, 12, 8, 4, 0] and torch.equal(out[keep], codes[keep])
