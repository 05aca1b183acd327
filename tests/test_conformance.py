"""The shared contract (vqbench/testing.py) run over every registered prior and backbone, and the example plugin."""

from __future__ import annotations

import pytest
import torch

import vqbench
import vqbench.plugins as plugins
from vqbench.testing import (
    SHAPE,
    TINY_BACKBONES,
    TINY_PRIORS,
    BackboneContract,
    PriorCase,
    PriorContract,
    V,
    build_prior,
    exact_independent_nll,
    gen,
    prior_cases,
    random_codes,
)

from . import example_plugin


class TestRegisteredPriors(PriorContract):
    @pytest.fixture(params=prior_cases())
    def case(self, request) -> PriorCase:
        return request.param


class TestBackbones(BackboneContract):
    @pytest.fixture(params=TINY_BACKBONES, ids=[c.id for c in TINY_BACKBONES])
    def case(self, request):
        return request.param


class TestExamplePlugin(PriorContract):
    """A third-party prior (tests/example_plugin.py) runs the same contract."""

    @pytest.fixture
    def case(self) -> PriorCase:
        plugins.register_plugin(example_plugin)
        return PriorCase("table", {"init_scale": 1.0}, nfe=lambda opts: 1)


def test_every_registered_prior_and_backbone_has_a_tiny_configuration():
    regs = vqbench.registries()
    assert set(regs.priors.names()) <= set(TINY_PRIORS), "add a tiny PriorCase for every registered prior"
    assert {c.spec["name"] for c in TINY_BACKBONES} == set(regs.backbones.names())


def test_a_registered_prior_without_a_tiny_configuration_fails_loudly():
    plugins.register_plugin(example_plugin)
    missing = [p.values[0] for p in prior_cases() if p.values[0].name == "table"]
    assert missing and missing[0].id == "table-MISSING"
    with pytest.raises(pytest.fail.Exception, match="no tiny configuration"):
        build_prior(missing[0])


def test_independent_nll_is_the_exact_value():
    prior = build_prior(TINY_PRIORS["independent"][0])
    train = torch.randint(V, (64, *SHAPE), generator=gen(0))
    prior.fit(train)
    codes = random_codes(6, 9)
    expected = exact_independent_nll(train, codes, prior.config.smoothing)
    torch.testing.assert_close(prior.nll(codes).double(), expected, rtol=1e-6, atol=1e-6)


def test_autoregressive_cached_and_recomputed_decoding_give_identical_codes():
    prior = build_prior(TINY_PRIORS["autoregressive"][0])
    cached = prior.sample(4, SHAPE, gen(3), kv_cache=True)
    recomputed = prior.sample(4, SHAPE, gen(3), kv_cache=False)
    assert torch.equal(cached, recomputed)
    keep = torch.rand(4, *SHAPE, generator=gen(1)) < 0.5
    assert torch.equal(prior.inpaint(cached, keep, gen(2), kv_cache=True), prior.inpaint(cached, keep, gen(2), kv_cache=False))
