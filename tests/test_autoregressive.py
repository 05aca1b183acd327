"""The autoregressive prior: known-truth NLL, KV-cache equivalence, filtering, causal inpainting."""

from __future__ import annotations

import math

import pytest
import torch
from vqbench_plugins.synthetic_latents import SyntheticLatents, SyntheticLatentsConfig

import vqbench
from vqbench.config import parse
from vqbench.sampling import filter_logits

from .conftest import fit_for

SMALL = {"backbone": {"name": "transformer", "dim": 64, "depth": 2, "heads": 4, "dim_head": 16}}


def ar(vocab=8, shape=(4, 4), seed=0, **params):
    cls = vqbench.registries().priors.get("autoregressive")
    torch.manual_seed(seed)
    return cls(parse(cls.Config, {**SMALL, **params}, "params"), vocab, shape).eval()


def test_trained_on_a_markov_source_its_nll_reaches_the_entropy():
    source = SyntheticLatents(SyntheticLatentsConfig(kind="markov", h=4, w=4, codebook_size=8, count=4000))
    entropy = source.truth()["entropy_bits_per_token"]
    train, test = torch.from_numpy(source.generate(4000, 0)), torch.from_numpy(source.generate(1000, 1))
    prior = fit_for(ar(), train)
    with torch.inference_mode():
        nll = prior.nll(test).mean().item()
    assert abs(nll - entropy) / entropy < 0.05


def test_kv_cache_and_recomputing_samplers_give_identical_codes():
    prior = ar(vocab=16, shape=(3, 5))
    for options in ({}, {"temperature": 0.8, "top_k": 5}, {"top_p": 0.9}):
        a = prior.sample(6, (3, 5), torch.Generator().manual_seed(1), kv_cache=True, **options)
        b = prior.sample(6, (3, 5), torch.Generator().manual_seed(1), kv_cache=False, **options)
        assert torch.equal(a, b) and a.shape == (6, 3, 5) and prior.last_nfe == 15


def test_top_k_one_is_greedy():
    prior = ar()
    a = prior.sample(4, (4, 4), torch.Generator().manual_seed(1), top_k=1)
    b = prior.sample(4, (4, 4), torch.Generator().manual_seed(2), top_k=1)
    assert torch.equal(a, b) and (a == a[:1]).all()


def test_filter_logits_top_k_and_nucleus():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    assert torch.isinf(filter_logits(logits, top_k=2)[0, 2:]).all() and torch.isfinite(filter_logits(logits, top_k=2)[0, :2]).all()
    kept = torch.isfinite(filter_logits(logits, top_p=0.7))[0].tolist()
    assert kept == [True, True, False, False]  # 0.5 < 0.7 ≤ 0.5 + 0.3
    assert torch.isfinite(filter_logits(logits, top_p=0.5))[0].tolist() == [True, False, False, False]


def test_inpainting_keeps_tokens_and_only_conditions_on_the_past():
    prior = ar()
    codes = torch.randint(8, (5, 4, 4), generator=torch.Generator().manual_seed(3))
    keep = torch.rand(5, 4, 4, generator=torch.Generator().manual_seed(4)) < 0.5
    out = prior.inpaint(codes, keep, torch.Generator().manual_seed(5))
    assert torch.equal(out[keep], codes[keep])
    # upper half masked: the regenerated tokens cannot depend on the kept lower half
    upper = torch.ones(5, 4, 4, dtype=torch.bool)
    upper[:, :2] = False
    changed_future = codes.clone()
    changed_future[:, 2:] = (changed_future[:, 2:] + 1) % 8
    a = prior.inpaint(codes, upper, torch.Generator().manual_seed(6))
    b = prior.inpaint(changed_future, upper, torch.Generator().manual_seed(6))
    assert torch.equal(a[:, :2], b[:, :2])


def test_nll_is_exact_bits_per_token():
    prior = ar()
    codes = torch.randint(8, (3, 4, 4))
    x = codes.flatten(1)
    inputs = torch.cat([torch.full_like(x[:, :1], 8), x[:, :-1]], dim=1)
    logp = torch.log_softmax(prior.net(inputs), dim=-1).gather(-1, x[..., None])[..., 0]
    torch.testing.assert_close(prior.nll(codes), -logp.mean(dim=1) / math.log(2))
    assert prior.supports == {"inpainting": True, "likelihood": True}


def test_hourglass_is_refused_as_a_causal_backbone():
    from vqbench.errors import ConfigError

    with pytest.raises(ConfigError, match="bidirectional only"):
        ar(backbone={"name": "hourglass"})


def test_nucleus_keeps_the_top_token_and_top_p_zero_is_refused():
    from vqbench.errors import ConfigError

    logits = torch.log(torch.tensor([[0.1, 0.6, 0.3]]))
    kept = torch.isfinite(filter_logits(logits, top_p=0.0))[0].tolist()  # greedy, not all -inf
    assert kept == [False, True, False]
    with pytest.raises(ConfigError, match="top_p"):
        ar(top_p=0.0)


def test_inverse_cdf_never_picks_a_zero_probability_code(monkeypatch):
    from vqbench import sampling

    logits = torch.log(torch.tensor([[0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 0.0, 0.0]]))
    for extreme in (0.0, 1.0 - 2**-24):  # the uniform draw at either end of [0, 1)
        monkeypatch.setattr(sampling.torch, "rand", lambda shape, v=extreme, **kw: torch.full(shape, v))
        picked = sampling.sample_categorical(logits)
        assert (logits.exp().gather(1, picked[:, None]) > 0).all(), (extreme, picked)


def test_sample_categorical_leaves_the_callers_logits_alone():
    from vqbench.sampling import sample_categorical

    logits = torch.randn(4, 6, generator=torch.Generator().manual_seed(0))
    before = logits.clone()
    sample_categorical(logits, 0.5, torch.Generator().manual_seed(1))
    assert torch.equal(logits, before)
