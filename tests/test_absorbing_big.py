"""Unleashing Transformers' big samples (``sample_big``): window coverage, the one-window case is their sampler, the
mixture's temperature handling, and known truth — with a denoiser exact for a Markov source, big samples keep the
source's horizontal transitions across the seams, where tiling (non-overlapping windows) breaks them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from vqbench_plugins.absorbing_big import window_offsets
from vqbench_plugins.synthetic_latents import SyntheticLatents, SyntheticLatentsConfig, stationary

import vqbench
from vqbench.config import parse

TINY = {"name": "transformer", "dim": 32, "depth": 1, "heads": 2, "dim_head": 16}


@pytest.fixture(autouse=True)
def one_thread():
    """These small tensors run 10–20× slower with two intra-op threads on a shared 2-core VM (measured)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def absorbing(vocab: int = 4, shape: tuple[int, int] = (4, 6), **params):
    cls = vqbench.registries().priors.get("absorbing")
    torch.manual_seed(0)
    return cls(parse(cls.Config, {"backbone": TINY, "total_steps": 8, **params}, "params"), vocab, shape).eval()


class MarkovDenoiser(nn.Module):
    """The exact absorbing-diffusion denoiser of a stationary Markov chain in the window's raster order: for each
    position i, p(x_i | revealed tokens) ∝ P^(i−l)[x_l, ·] · P^(r−i)[·, x_r] with l (r) the nearest revealed position
    before (after) i — π when there is none before, 1 when none after."""

    def __init__(self, transition: np.ndarray, length: int, mask_token: int):
        super().__init__()
        p = torch.from_numpy(transition)
        powers = [torch.eye(len(p), dtype=torch.float64)]
        for _ in range(length):
            powers.append(powers[-1] @ p)
        self.register_buffer("powers", torch.stack(powers).float())  # (length + 1)×V×V
        self.register_buffer("pi", torch.from_numpy(stationary(transition)).float())
        self.mask_token = mask_token

    def forward(self, codes: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        b, n = codes.shape
        known, index = codes != self.mask_token, torch.arange(n).expand(b, n)
        at_or_before = torch.where(known, index, -1).cummax(dim=1).values
        before = torch.cat([torch.full((b, 1), -1), at_or_before[:, :-1]], dim=1)
        at_or_after = torch.where(known, index, n).flip(1).cummin(dim=1).values.flip(1)
        after = torch.cat([at_or_after[:, 1:], torch.full((b, 1), n)], dim=1)
        code = lambda where: torch.where((where >= 0) & (where < n), codes.gather(1, where.clamp(0, n - 1)), 0)  # noqa: E731
        left = torch.where((before >= 0)[..., None], self.powers[(index - before).clamp(max=n), code(before)], self.pi)
        right = torch.where((after < n)[..., None], self.powers.transpose(1, 2)[(after - index).clamp(max=n), code(after)], 1.0)
        return (left * right).clamp_min(1e-30).log()


def markov_prior(h: int = 4, w: int = 6):
    source = SyntheticLatents(SyntheticLatentsConfig(kind="markov", h=h, w=w, codebook_size=4, concentration=0.5, seed=4))
    prior = absorbing(4, (h, w))
    prior.net = MarkovDenoiser(source.transition, h * w, prior.mask_token)
    return prior, source


def transition_tv(pairs: torch.Tensor, transition: np.ndarray) -> float:
    """Σ_a freq(a)·TV(empirical row a, P[a]) over (a, b) pairs (M×2)."""
    k = len(transition)
    counts = torch.bincount(pairs[:, 0] * k + pairs[:, 1], minlength=k * k).view(k, k).double().numpy()
    rows = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    return float((counts.sum(1) / counts.sum() * 0.5 * np.abs(rows - transition).sum(1)).sum())


def column_pairs(grids: torch.Tensor, columns: list[int]) -> torch.Tensor:
    """(x[:, r, c], x[:, r, c + 1]) for every row r and c in ``columns``."""
    return torch.stack([torch.stack([grids[:, :, c], grids[:, :, c + 1]], dim=-1).reshape(-1, 2) for c in columns]).reshape(-1, 2)


def test_windows_cover_the_grid_and_the_last_one_is_never_skipped():
    assert window_offsets(12, 6, 1) == list(range(7))
    assert window_offsets(12, 6, 4) == [0, 4, 6]  # their range(0, 7, 4) stops at 4: columns 10–11 uncovered
    assert window_offsets(12, 6, 6) == [0, 6] and window_offsets(6, 6, 3) == [0]
    with pytest.raises(ValueError, match="window_step must lie in"):
        window_offsets(12, 6, 7)
    with pytest.raises(ValueError, match="smaller than the training side"):
        window_offsets(4, 6, 1)


def test_with_one_window_the_big_sampler_is_the_unleashing_sampler():
    """Big grid = training grid: one window, the mixture is its softmax, and the Bernoulli 1/t rule with the same
    generator reproduces ``sample(unmask="bernoulli")`` draw for draw."""
    prior = absorbing(vocab=8, shape=(3, 4))
    reference = prior.sample(6, (3, 4), torch.Generator().manual_seed(3), unmask="bernoulli", steps=8, temperature=0.7)
    big = prior.sample_big(6, (3, 4), torch.Generator().manual_seed(3), steps=8, temperature=0.7)
    assert torch.equal(big, reference)


class FixedLogits(nn.Module):
    """Logits that depend only on the position inside the window (one row of ``table`` per position)."""

    def __init__(self, table: torch.Tensor):
        super().__init__()
        self.register_buffer("table", table)

    def forward(self, codes: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.table.expand(len(codes), -1, -1)


def test_windows_are_averaged_in_probability_then_sharpened_by_the_temperature():
    """Training grid 1×2, big grid 1×3, windows at columns 0 and 1: column 1 is window 0's second position and window
    1's first, so its draw follows [(softmax(a) + softmax(b)) / 2]^(1/T), normalised (their mixture with temperature)."""
    a, b = torch.tensor([2.0, 0.0, -1.0]), torch.tensor([-1.0, 1.5, 0.5])
    prior = absorbing(vocab=3, shape=(1, 2))
    prior.net = FixedLogits(torch.stack([a, b]))
    x = torch.full((1, 1, 3), prior.mask_token)
    mixture = prior.window_mixture(x, [(0, 0), (0, 1)], None, 1024)[0, 0]
    torch.testing.assert_close(mixture, torch.stack([a.softmax(0), (a.softmax(0) + b.softmax(0)) / 2, b.softmax(0)]))
    temperature, n = 0.5, 40_000
    samples = prior.sample_big(n, (1, 3), torch.Generator().manual_seed(0), temperature=temperature, order="raster")
    expected = mixture.pow(1 / temperature)
    expected = expected / expected.sum(-1, keepdim=True)
    for column in range(3):
        empirical = torch.bincount(samples[:, 0, column], minlength=3).double() / n
        torch.testing.assert_close(empirical, expected[column].double(), rtol=0, atol=0.012)
    assert prior.last_nfe == 1 + 2 + 1  # raster, one token per step: the windows covering it


@pytest.mark.parametrize("order", ["raster", "random"])
def test_big_samples_keep_the_markov_transitions_across_the_seams_and_tiling_breaks_them(order):
    """Known truth, with a denoiser exact for the source (constructed, not trained). Training grids 3×5 from a Markov
    source (raster order), big grids 3×10. Seam pairs are the column pairs (4, 5), which neither training-size crop
    (left, right) contains. With overlapping windows (stride 1) their empirical transition matrix matches the
    source's up to sampling noise (≈ 0.01 here) and the mixture's dilution — at column 5 one of the 5 covering windows
    cannot see column 4, ≈ TV(P, π)/5 ≈ 0.08 — comparably to the pairs inside the crops. Tiling (stride 5) leaves
    column 5 to the one window that cannot see column 4: the seam loses the source's transitions (TV ≈ 0.4)."""
    prior, source = markov_prior(3, 5)
    big = prior.sample_big(2000, (3, 10), torch.Generator().manual_seed(0), window_step=1, order=order, temperature=1.0)
    seam = transition_tv(column_pairs(big, [4]), source.transition)
    inside = transition_tv(column_pairs(big, [0, 1, 2, 3, 5, 6, 7, 8]), source.transition)
    tiled = prior.sample_big(2000, (3, 10), torch.Generator().manual_seed(0), window_step=5, order=order, temperature=1.0)
    tiled_seam = transition_tv(column_pairs(tiled, [4]), source.transition)
    assert seam < 0.12 and seam <= inside + 0.04, (seam, inside)
    assert tiled_seam > 0.3 and tiled_seam > seam + 0.2, (tiled_seam, seam)
    assert big.shape == (2000, 3, 10) and int(big.max()) < 4


def test_the_code_digest_of_the_absorbing_prior_covers_its_big_sampler():
    """A change of ``sample_big`` must recompute finished cells: the prior's digest follows its plugin's mixins."""
    from vqbench_plugins import absorbing_big
    from vqbench_plugins.absorbing import AbsorbingPrior

    from vqbench.provenance import _source_files

    assert str(Path(absorbing_big.__file__).resolve()) in _source_files(AbsorbingPrior)
    assert not any(path.endswith("abc.py") or "/vqbench/" in path for path in _source_files(AbsorbingPrior))
