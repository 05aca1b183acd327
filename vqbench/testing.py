"""The contract every prior and every backbone honours, as pytest mixins (diffusers-style).

``PriorContract`` and ``BackboneContract`` hold the tests; a test class mixes one in and provides a ``case`` fixture
returning a ``PriorCase`` / ``BackboneCase`` (a tiny configuration). Plugins hand their cases to the suite through the
``vqbench_conformance_cases`` hook, the built-in ones included; ``tests/test_conformance.py`` runs every case of every
registered prior and backbone, and skips (with a note naming the plugin) those without one.

A plugin author runs the contract on the plugin's own priors from the plugin's tests (docs/writing-a-plugin.md)::

    import pytest
    from vqbench.testing import PriorContract, prior_cases

    class TestMyPrior(PriorContract):
        @pytest.fixture(params=prior_cases(plugin="my_plugin"))  # the entry-point name
        def case(self, request):
            return request.param

Contracts that need a capability the prior does not declare (``supports_inpainting``, ``supports_likelihood``,
``conditional``) are skipped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch

import vqbench
from vqbench.config import parse
from vqbench.interfaces import Backbone, Prior
from vqbench.plugins import plugin_manager
from vqbench.precision import make_autocast
from vqbench.registry import Registry

V, SHAPE, CLASSES = 8, (4, 4), 3  # tiny codebook, latent grid and number of classes

HOURGLASS = {"name": "hourglass", "dim": 32, "depth": [1, 1, 1], "heads": 2, "dim_head": 16, "class_conditional": True}
TRANSFORMER = {"name": "transformer", "dim": 32, "depth": 2, "heads": 2, "dim_head": 16, "class_conditional": True}
IMAGEBART_SCALE_NET = {"dim": 32, "encoder_depth": 1, "decoder_depth": 1, "heads": 2, "dim_head": 16}


@dataclass
class PriorCase:
    """A registered prior name, tiny params, and what the contract may expect of it."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)
    conditional: bool = False  # loss and samples must depend on class labels
    nfe: Callable[[dict[str, Any]], float] | None = None  # expected last_nfe of ``sample(**nfe_opts)``
    nfe_opts: dict[str, Any] = field(default_factory=dict)
    commits: bool = False  # a token the sampler has placed is never changed again (absorbing / MaskGIT)
    id: str = ""

    def __post_init__(self) -> None:
        self.id = self.id or self.name


@dataclass
class BackboneCase:
    """A tiny backbone spec (``{"name": ..., **config}``) and whether to build it causally."""

    spec: dict[str, Any]
    causal: bool = False
    id: str = ""

    def __post_init__(self) -> None:
        self.id = self.id or str(self.spec.get("name", ""))


def conformance_cases() -> list[tuple[str, PriorCase | BackboneCase]]:
    """(plugin name, case) for every case the loaded plugins return from the ``vqbench_conformance_cases`` hook."""
    found: list[tuple[str, PriorCase | BackboneCase]] = []
    for impl in reversed(plugin_manager().hook.vqbench_conformance_cases.get_hookimpls()):  # in registration order
        result = impl.function()
        if result is None:
            continue
        for case in result if isinstance(result, (list, tuple)) else [result]:
            if not isinstance(case, (PriorCase, BackboneCase)):
                raise TypeError(
                    f"plugin '{impl.plugin_name}': vqbench_conformance_cases must return vqbench.testing.PriorCase or BackboneCase objects, got {case!r}"
                )
            found.append((impl.plugin_name, case))
    return found


def tiny_priors() -> dict[str, list[PriorCase]]:
    """Every prior case, by prior name."""
    cases: dict[str, list[PriorCase]] = {}
    for _, case in conformance_cases():
        if isinstance(case, PriorCase):
            cases.setdefault(case.name, []).append(case)
    return cases


def tiny_backbones() -> list[BackboneCase]:
    """Every backbone case."""
    return [case for _, case in conformance_cases() if isinstance(case, BackboneCase)]


def __getattr__(name: str) -> Any:
    """``TINY_PRIORS`` and ``TINY_BACKBONES``: ``tiny_priors()`` and ``tiny_backbones()``, collected on access."""
    if name == "TINY_PRIORS":
        return tiny_priors()
    if name == "TINY_BACKBONES":
        return tiny_backbones()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def no_case(kind: str, name: str, plugin: str) -> str:
    """The skip reason of a registered prior or backbone without a conformance case."""
    return f"{kind} '{name}': plugin '{plugin}' registers no conformance case: implement vqbench_conformance_cases (docs/writing-a-plugin.md)"


def _case_name(case: PriorCase | BackboneCase) -> str:
    return case.name if isinstance(case, PriorCase) else str(case.spec.get("name", ""))


def _params(kind: str, registry: Registry, case_type: type, plugin: str | None) -> list[Any]:
    """The pytest params of ``kind``: every case, and a skipped param for each registered name without one. A case
    naming something nobody registers is kept (building it then fails with the known names)."""
    found = [(origin, _case_name(c), c) for origin, c in conformance_cases() if isinstance(c, case_type)]
    names = [name for name in registry.names() if plugin in (None, registry.origin(name))]
    names += sorted({name for origin, name, _ in found if plugin in (None, origin)} - set(names) - set(registry.names()))
    params = []
    for name in names:
        cases = [c for _, n, c in found if n == name]
        params += [pytest.param(c, id=c.id) for c in cases]
        if not cases:
            reason = no_case(kind, name, registry.origin(name))
            params.append(pytest.param(None, id=f"{name}-no-case", marks=pytest.mark.skip(reason=reason)))
    if plugin is not None and not params:
        raise LookupError(f"no {kind} is registered by plugin '{plugin}': install the package (`pip install -e .`) or check the entry-point name")
    return params


def prior_cases(plugin: str | None = None) -> list[Any]:
    """One pytest param per case of every registered prior (or of those ``plugin`` registers); a prior without a
    case becomes a skipped param whose reason names its plugin."""
    return _params("prior", vqbench.registries().priors, PriorCase, plugin)


def backbone_cases(plugin: str | None = None) -> list[Any]:
    """Like ``prior_cases``, for backbones."""
    return _params("backbone", vqbench.registries().backbones, BackboneCase, plugin)


def build_prior(case: PriorCase, num_classes: int = 0, seed: int = 0) -> Prior:
    """A tiny prior built as the runner does (``cls(parse(Config, params), V, shape, num_classes)``), fitted or
    randomly initialised."""
    cls = vqbench.registries().priors.get(case.name)
    torch.manual_seed(seed)
    prior = cls(parse(cls.Config, case.params, "prior.params"), V, SHAPE, num_classes)
    if not cls.trainable:
        prior.fit(torch.randint(V, (64, *SHAPE), generator=torch.Generator().manual_seed(seed)))
    return prior.eval()


def build_backbone(case: BackboneCase, seed: int = 0, **overrides: Any) -> Backbone:
    from vqbench.backbones import build_backbone as build

    torch.manual_seed(seed)
    return build({**case.spec, **overrides}, "backbone", "transformer", V + 1, V, SHAPE, CLASSES, causal=case.causal).eval()


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def random_codes(n: int, seed: int) -> torch.Tensor:
    return torch.randint(V, (n, *SHAPE), generator=gen(seed))


class PriorContract:
    """Contract tests for one prior; the class provides a ``case`` fixture (a ``PriorCase``)."""

    def test_loss_is_a_finite_differentiable_scalar(self, case):
        prior = build_prior(case).train()
        loss = prior.loss(random_codes(4, 1))
        assert loss.shape == () and loss.dtype.is_floating_point and torch.isfinite(loss)
        if type(prior).trainable:
            loss.backward()
            grads = [p.grad for p in prior.parameters() if p.requires_grad]
            assert grads and any(g is not None and g.abs().sum() > 0 for g in grads)

    def test_samples_are_integer_codes_of_the_grid_shape(self, case):
        samples = build_prior(case).sample(3, SHAPE, gen(0))
        assert samples.shape == (3, *SHAPE) and samples.dtype == torch.long
        assert samples.min() >= 0 and samples.max() < V

    def test_same_generator_same_codes_other_seed_other_codes(self, case):
        prior = build_prior(case)
        a, b, c = (prior.sample(4, SHAPE, gen(s)) for s in (5, 5, 6))
        assert torch.equal(a, b)
        assert not torch.equal(a, c)

    def test_drawing_from_row_subset_logits_equals_drawing_from_full_logits(self, case, monkeypatch):
        """Samplers that ask the backbone for some positions' logits (``logits_at``) give the codes that indexing
        the full forward gives, for the same generator, sampling and inpainting."""
        prior = build_prior(case)
        net = getattr(prior, "net", None)
        if not isinstance(net, Backbone) or type(net).logits_at is Backbone.logits_at:
            pytest.skip("no backbone with its own logits_at")
        codes, keep = random_codes(4, 2), torch.rand(4, *SHAPE, generator=gen(3)) < 0.5
        fast = [prior.sample(4, SHAPE, gen(7)), prior.inpaint(codes, keep, gen(8)) if prior.supports["inpainting"] else None]
        monkeypatch.setattr(net, "logits_at", lambda c, rows, labels=None: net(c, labels)[rows])
        plain = [prior.sample(4, SHAPE, gen(7)), prior.inpaint(codes, keep, gen(8)) if prior.supports["inpainting"] else None]
        assert torch.equal(fast[0], plain[0]) and (fast[1] is None or torch.equal(fast[1], plain[1]))

    def test_nfe_is_reported_and_matches_the_sampler_settings(self, case):
        if case.nfe is None:
            pytest.skip("no expected NFE for this case")
        prior = build_prior(case)
        prior.last_nfe = -1
        prior.sample(2, SHAPE, gen(0), **case.nfe_opts)
        assert prior.last_nfe == case.nfe({**case.params, **case.nfe_opts})

    def test_inpainting_keeps_kept_tokens_and_regenerates_the_rest(self, case):
        prior = build_prior(case)
        if not prior.supports_inpainting:
            pytest.skip("no inpainting")
        codes = random_codes(4, 2)
        keep = torch.rand(codes.shape, generator=gen(3)) < 0.5
        out = prior.inpaint(codes, keep, gen(0))
        assert out.shape == codes.shape and out.dtype == torch.long and out.min() >= 0 and out.max() < V
        assert torch.equal(out[keep], codes[keep])
        everything = prior.inpaint(codes, torch.zeros_like(keep), gen(0))
        assert (everything != codes).float().mean() > 0.25  # a fully masked random grid is regenerated, not returned

    def test_inpainting_ignores_the_ground_truth_of_masked_tokens(self, case):
        """Masked tokens must not start from (or leak) their given codes: changing them changes nothing."""
        prior = build_prior(case)
        if not prior.supports_inpainting:
            pytest.skip("no inpainting")
        codes = random_codes(4, 2)
        keep = torch.rand(codes.shape, generator=gen(3)) < 0.5
        other = torch.where(keep, codes, (codes + 1 + torch.randint(V - 1, codes.shape, generator=gen(4))) % V)
        first, seen_first = run_recording(prior, lambda: prior.inpaint(codes, keep, gen(0)))
        second, seen_second = run_recording(prior, lambda: prior.inpaint(other, keep, gen(0)))
        assert torch.equal(first, second)
        assert len(seen_first) == len(seen_second)  # and the network saw the same inputs at every evaluation
        assert all(torch.equal(a, b) for a, b in zip(seen_first, seen_second))

    def test_inpainting_a_constant_prior_does_not_return_the_masked_input(self, case):
        """Fit on constant grids of code a; a masked region holding code b must come back (mostly) as a."""
        prior = build_prior(case)
        if not prior.supports_inpainting or type(prior).trainable:
            pytest.skip("closed-form priors only (trained priors: see test_inpainting_ignores_the_ground_truth_of_masked_tokens)")
        prior.fit(torch.full((64, *SHAPE), 2))
        keep = torch.zeros(4, *SHAPE, dtype=torch.bool)
        keep[:, 0] = True
        out = prior.inpaint(torch.full((4, *SHAPE), 5), keep, gen(0))
        assert (out[~keep] == 2).float().mean() > 0.5 and torch.equal(out[keep], torch.full_like(out[keep], 5))

    def test_placed_tokens_are_never_changed(self, case):
        if not case.commits:
            pytest.skip("this sampler may revise tokens")
        prior = build_prior(case)
        out, inputs = run_recording(prior, lambda: prior.sample(3, SHAPE, gen(0)))
        out = out.flatten(1)
        mask = getattr(prior, "mask_token", V)
        for before, after in zip(inputs, inputs[1:] + [out]):
            placed = before != mask
            assert torch.equal(after[placed], before[placed])
        assert len(inputs) > 1

    def test_labels_change_the_loss_and_the_samples(self, case):
        if not case.conditional:
            pytest.skip("unconditional")
        prior = build_prior(case, num_classes=CLASSES)
        codes, la, lb = random_codes(4, 1), torch.tensor([0, 1, 2, 0]), torch.tensor([1, 2, 0, 1])
        losses = []
        for labels in (la, la, lb):
            torch.manual_seed(0)
            losses.append(prior.loss(codes, labels).item())
        assert losses[0] == losses[1] != losses[2]
        assert not torch.equal(prior.sample(4, SHAPE, gen(0), labels=la), prior.sample(4, SHAPE, gen(0), labels=lb))
        if prior.supports_inpainting:
            keep = torch.zeros(codes.shape, dtype=torch.bool)
            assert not torch.equal(prior.inpaint(codes, keep, gen(0), labels=la), prior.inpaint(codes, keep, gen(0), labels=lb))

    def test_nll_is_finite_and_nonnegative(self, case):
        prior = build_prior(case)
        if not prior.supports_likelihood:
            pytest.skip("no likelihood")
        nll = prior.nll(random_codes(5, 1), gen(0))
        assert nll.shape == (5,) and torch.isfinite(nll).all() and (nll >= 0).all()

    def test_samples_under_bf16_autocast(self, case):
        prior = build_prior(case)
        with make_autocast(torch.device("cpu"), "bf16")():
            samples = prior.sample(2, SHAPE, gen(0))
        assert samples.shape == (2, *SHAPE) and samples.dtype == torch.long and samples.max() < V


def run_recording(prior: Prior, call: Callable[[], torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """``call()``'s result and every ``codes`` tensor the prior's network (``prior.net``, if any) was called with."""
    seen: list[torch.Tensor] = []
    net = getattr(prior, "net", None)
    if not isinstance(net, torch.nn.Module):
        return call(), seen
    handle = net.register_forward_pre_hook(lambda module, args: seen.append(args[0].clone()))
    try:
        return call(), seen
    finally:
        handle.remove()


class BackboneContract:
    """Contract tests for one backbone configuration; the class provides a ``case`` fixture (a ``BackboneCase``)."""

    def test_logits_shape_dtype_and_label_dependence(self, case):
        net = build_backbone(case)
        codes = torch.randint(V + 1, (2, SHAPE[0] * SHAPE[1]), generator=gen(0))
        logits = net(codes)
        assert logits.shape == (2, SHAPE[0] * SHAPE[1], V) and logits.dtype == torch.float32
        assert torch.isfinite(logits).all()
        assert not torch.allclose(net(codes, torch.tensor([0, 1])), net(codes, torch.tensor([2, 2])))

    def test_forward_runs_in_bf16_under_the_autocast_helper(self, case):
        net = build_backbone(case)
        codes = torch.randint(V, (2, SHAPE[0] * SHAPE[1]), generator=gen(0))
        with make_autocast(torch.device("cpu"), "bf16")():
            logits = net(codes)
        assert logits.dtype == torch.bfloat16
        with make_autocast(torch.device("cpu"), "fp32")():
            assert net(codes).dtype == torch.float32

    def test_logits_at_some_positions_are_the_full_forward_there(self, case):
        """``logits_at`` (samplers that draw a subset of positions) returns ``forward(codes)[rows]``."""
        net, n = build_backbone(case), SHAPE[0] * SHAPE[1]
        codes, labels = torch.randint(V, (2, n), generator=gen(0)), torch.tensor([0, 1])
        rows = torch.rand(2, n, generator=gen(1)) < 0.3
        rows[1], rows[1, -1] = False, True  # a different count per grid
        with torch.inference_mode():
            torch.testing.assert_close(net.logits_at(codes, rows, labels), net(codes, labels)[rows], rtol=1e-5, atol=1e-5)
            assert net.logits_at(codes, torch.zeros_like(rows), labels).shape == (0, V)

    def test_causal_backbones_never_see_the_future(self, case):
        if not case.causal:
            pytest.skip("bidirectional")
        net, n = build_backbone(case), SHAPE[0] * SHAPE[1]
        codes = torch.randint(V, (2, n), generator=gen(0))
        for j in (0, 5, n - 2):
            changed = codes.clone()
            changed[:, j + 1 :] = (changed[:, j + 1 :] + 1) % V
            a, b = net(codes), net(changed)
            torch.testing.assert_close(a[:, : j + 1], b[:, : j + 1], rtol=0, atol=1e-5)
            assert not torch.allclose(a[:, j + 1 :], b[:, j + 1 :])

    def test_bidirectional_backbones_see_every_token(self, case):
        if case.causal:
            pytest.skip("causal")
        net, n = build_backbone(case), SHAPE[0] * SHAPE[1]
        codes = torch.randint(V, (2, n), generator=gen(0))
        changed = codes.clone()
        changed[:, -1] = (changed[:, -1] + 1) % V
        assert not torch.allclose(net(codes)[:, 0], net(changed)[:, 0])

    def test_cached_decoding_equals_the_full_forward(self, case):
        if not case.causal:
            pytest.skip("bidirectional")
        from vqbench.nn import KVCache

        net, n = build_backbone(case), SHAPE[0] * SHAPE[1]
        codes = torch.randint(V, (2, n), generator=gen(0))
        cache = KVCache()
        stepped = torch.cat([net(codes[:, i : i + 1], cache=cache, offset=i) for i in range(n)], dim=1)
        torch.testing.assert_close(stepped, net(codes), rtol=1e-4, atol=1e-5)

    def test_lean_decode_steps_equal_the_full_forward(self, case):
        """``decode_step`` (the sampler's cached path without module calls), where a causal backbone offers it."""
        if not case.causal:
            pytest.skip("bidirectional")
        from vqbench.nn import StaticKVCache

        net, n = build_backbone(case), SHAPE[0] * SHAPE[1]
        if not hasattr(net, "decode_step"):
            pytest.skip("no decode_step")
        codes = torch.randint(V, (2, n), generator=gen(0))
        labels = torch.tensor([0, 1]) if getattr(net, "class_embed", None) is not None else None
        cache = StaticKVCache(n)
        with torch.inference_mode():
            stepped = torch.stack([net.decode_step(codes[:, i : i + 1], i, cache, labels) for i in range(n)], dim=1)
            torch.testing.assert_close(stepped, net(codes, labels), rtol=1e-4, atol=1e-5)


def exact_independent_nll(train: torch.Tensor, codes: torch.Tensor, smoothing: float) -> torch.Tensor:
    """Bits per token of ``codes`` under per-position smoothed frequencies of ``train``, by plain counting."""
    flat_train, flat = train.flatten(1), codes.flatten(1)
    n = flat.shape[1]
    bits = torch.zeros(len(flat), dtype=torch.float64)
    for pos in range(n):  # positions of a tiny grid; the prior itself is vectorised
        counts = torch.bincount(flat_train[:, pos], minlength=V).double() + smoothing
        bits -= torch.log2(counts[flat[:, pos]] / counts.sum())
    return bits / n


__all__ = [
    "PriorCase",
    "BackboneCase",
    "PriorContract",
    "BackboneContract",
    "conformance_cases",
    "tiny_priors",
    "tiny_backbones",
    "prior_cases",
    "backbone_cases",
    "build_prior",
    "build_backbone",
    "exact_independent_nll",
]
