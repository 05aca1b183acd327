"""The independent prior: known-truth likelihood, sampling distribution, inpainting."""

from __future__ import annotations

import math

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

import vqbench


def build(config=None, vocab=4, shape=(2, 3)):
    cls = vqbench.registries().priors.get("independent")
    return cls(cls.Config(**(config or {})), vocab, shape)


def iid_codes(n, probs, shape=(2, 3), seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.multinomial(torch.tensor(probs), n * shape[0] * shape[1], replacement=True, generator=g).view(n, *shape)


def test_nll_reaches_the_known_entropy():
    probs = [0.5, 0.25, 0.125, 0.125]  # entropy 1.75 bits
    prior = build({"smoothing": 0.01})
    prior.fit(iid_codes(20000, probs))
    nll = prior.nll(iid_codes(4000, probs, seed=1)).mean().item()
    assert nll == pytest.approx(1.75, abs=0.02)
    assert prior.supports == {"inpainting": True, "likelihood": True} and not prior.trainable


def test_samples_follow_the_fitted_distribution_and_are_reproducible():
    prior = build()
    prior.fit(iid_codes(5000, [0.7, 0.1, 0.1, 0.1]))
    a = prior.sample(2000, (2, 3), torch.Generator().manual_seed(3))
    b = prior.sample(2000, (2, 3), torch.Generator().manual_seed(3))
    assert a.dtype == torch.int64 and a.shape == (2000, 2, 3) and torch.equal(a, b)
    assert (a == 0).float().mean().item() == pytest.approx(0.7, abs=0.02)
    assert prior.last_nfe == 0
    with pytest.raises(ValueError, match="built for"):
        prior.sample(1, (3, 3), torch.Generator())


def test_per_position_distributions_are_learned():
    codes = torch.zeros(100, 2, 3, dtype=torch.long)
    codes[:, 1, 2] = 3
    prior = build({"smoothing": 1e-3})
    prior.fit(codes)
    sample = prior.sample(50, (2, 3), torch.Generator().manual_seed(0))
    assert (sample[:, 1, 2] == 3).all() and (sample[:, 0, 0] == 0).all()


def test_inpainting_never_changes_kept_tokens():
    prior = build()
    prior.fit(iid_codes(100, [0.25] * 4))
    codes = iid_codes(16, [0.25] * 4, seed=5)
    keep = torch.rand(16, 2, 3, generator=torch.Generator().manual_seed(1)) < 0.5
    out = prior.inpaint(codes, keep, torch.Generator().manual_seed(2))
    assert torch.equal(out[keep], codes[keep]) and out.shape == codes.shape


def test_smoothing_gives_unseen_codes_finite_likelihood():
    prior = build({"smoothing": 0.5})
    prior.fit(torch.zeros(10, 2, 3, dtype=torch.long))
    nll = prior.nll(torch.full((1, 2, 3), 3)).item()
    assert math.isfinite(nll) and nll == pytest.approx(-math.log2(0.5 / 12))


class LargestTensor(TorchDispatchMode):
    """Records the size in bytes of the largest tensor any operation inside the block produces."""

    def __init__(self) -> None:
        super().__init__()
        self.bytes = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for item in tree_leaves(out):
            if isinstance(item, torch.Tensor):
                self.bytes = max(self.bytes, item.numel() * item.element_size())
        return out


def test_fit_counts_every_position_and_code_without_a_one_hot_of_the_data():
    """The counts of the grids, computed in memory of the order of the grids and the table (the whole training set is
    fitted at once, on the GPU in a CUDA run: a grids × positions × codes one-hot does not fit there)."""
    vocab, shape = 32, (4, 4)
    codes = torch.randint(vocab, (64, *shape), generator=torch.Generator().manual_seed(0))
    prior = build(vocab=vocab, shape=shape)
    with LargestTensor() as largest:
        prior.fit(codes)
    flat = codes.flatten(1)
    expected = torch.stack([torch.bincount(flat[:, i], minlength=vocab) for i in range(flat.shape[1])]).double()
    assert torch.equal(prior.counts, expected)
    assert largest.bytes <= 2 * max(flat.numel() * 8, prior.counts.numel() * 8)  # a one-hot would be 64 × 16 × 32 × 8 bytes
    codes[0, 0, 0] = vocab  # one past the codebook: would count as code 0 of the next position
    with pytest.raises(ValueError, match="must lie in"):
        prior.fit(codes)
