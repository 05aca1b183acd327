"""The shared contract (vqbench/testing.py) run over every case the plugins return, and the example plugin."""

from __future__ import annotations

from importlib import metadata

import pytest
import torch

import vqbench
import vqbench.plugins as plugins
from vqbench.errors import UnknownNameError
from vqbench.testing import (
    SHAPE,
    BackboneContract,
    PriorCase,
    PriorContract,
    V,
    backbone_cases,
    build_prior,
    conformance_cases,
    exact_independent_nll,
    gen,
    prior_cases,
    random_codes,
    tiny_priors,
)

from . import example_plugin


class TestRegisteredPriors(PriorContract):
    @pytest.fixture(params=prior_cases())
    def case(self, request) -> PriorCase:
        return request.param


class TestBackbones(BackboneContract):
    @pytest.fixture(params=backbone_cases())
    def case(self, request):
        return request.param


class TestExamplePlugin(PriorContract):
    """A third-party prior (tests/example_plugin.py) runs the same contract."""

    @pytest.fixture
    def case(self) -> PriorCase:
        plugins.register_plugin(example_plugin)
        return PriorCase("table", {"init_scale": 1.0}, nfe=lambda opts: 1)


def test_every_builtin_prior_and_backbone_has_a_case_from_its_own_plugin():
    builtin = {ep.name for ep in metadata.entry_points(group=plugins.ENTRY_POINT_GROUP) if ep.dist and ep.dist.name == plugins.BUILTIN_DISTRIBUTION}
    regs = vqbench.registries()
    cases = conformance_cases()
    for kind, registry in (("prior", regs.priors), ("backbone", regs.backbones)):
        for name in (n for n in registry.names() if registry.origin(n) in builtin):
            origins = {origin for origin, c in cases if (c.name if isinstance(c, PriorCase) else c.spec["name"]) == name}
            assert origins == {registry.origin(name)}, f"built-in {kind} '{name}' needs a case from its plugin's vqbench_conformance_cases"
    assert {"independent", "sundae", "absorbing", "autoregressive", "imagebart"} <= set(tiny_priors())


def test_a_prior_without_a_case_is_skipped_with_a_reason_naming_its_plugin():
    plugins.register_plugin(example_plugin)  # registers 'table' and 'nan_prior', and no conformance case
    params = {p.id: p for p in prior_cases()}
    assert "table" not in params and "independent" in params
    (mark,) = params["table-no-case"].marks
    assert mark.name == "skip"
    assert mark.kwargs["reason"] == (
        "prior 'table': plugin 'tests.example_plugin' registers no conformance case: implement vqbench_conformance_cases (docs/writing-a-plugin.md)"
    )
    assert not params["independent"].marks


def test_cases_returned_through_the_hook_are_run():
    class Cases:
        @vqbench.hookimpl
        def vqbench_conformance_cases(self):
            return PriorCase("table", {"init_scale": 1.0}, id="table-from-hook")  # one case, not a list

    plugins.register_plugin(example_plugin)
    plugins.register_plugin(Cases())
    params = {p.id: p for p in prior_cases()}
    assert params["table-from-hook"].values[0].params == {"init_scale": 1.0} and not params["table-from-hook"].marks
    assert "table-no-case" not in params and "nan_prior-no-case" in params
    assert [p.id for p in prior_cases(plugin="tests.example_plugin")] == ["nan_prior-no-case", "table-from-hook"]


def test_a_case_for_an_unregistered_prior_is_kept_and_fails_when_built():
    class Typo:
        @vqbench.hookimpl
        def vqbench_conformance_cases(self):
            return [PriorCase("indepedent")]

    plugins.register_plugin(Typo())
    (param,) = [p for p in prior_cases() if p.id == "indepedent"]
    with pytest.raises(UnknownNameError, match="did you mean 'independent'"):
        build_prior(param.values[0])


def test_a_hook_returning_something_else_than_cases_names_its_plugin():
    class Wrong:
        @vqbench.hookimpl
        def vqbench_conformance_cases(self):
            return [{"name": "table"}]

    wrong = Wrong()
    plugins.register_plugin(wrong)
    with pytest.raises(TypeError, match=rf"plugin '{id(wrong)}': vqbench_conformance_cases must return vqbench.testing.PriorCase or BackboneCase"):
        prior_cases()


def test_independent_nll_is_the_exact_value():
    prior = build_prior(tiny_priors()["independent"][0])
    train = torch.randint(V, (64, *SHAPE), generator=gen(0))
    prior.fit(train)
    codes = random_codes(6, 9)
    expected = exact_independent_nll(train, codes, prior.config.smoothing)
    torch.testing.assert_close(prior.nll(codes).double(), expected, rtol=1e-6, atol=1e-6)


def test_autoregressive_cached_and_recomputed_decoding_give_identical_codes():
    prior = build_prior(tiny_priors()["autoregressive"][0])
    cached = prior.sample(4, SHAPE, gen(3), kv_cache=True)
    recomputed = prior.sample(4, SHAPE, gen(3), kv_cache=False)
    assert torch.equal(cached, recomputed)
    keep = torch.rand(4, *SHAPE, generator=gen(1)) < 0.5
    assert torch.equal(prior.inpaint(cached, keep, gen(2), kv_cache=True), prior.inpaint(cached, keep, gen(2), kv_cache=False))
