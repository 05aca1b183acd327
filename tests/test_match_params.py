"""``priors[].match_params``: a row's width is set so its parameter count is the closest to another row's."""

from __future__ import annotations

import pytest

import vqbench
from vqbench.errors import ConfigError
from vqbench.runner.matching import STEP, count_params, with_width
from vqbench.runner.plan import plan_cells
from vqbench.runner.schema import parse_benchmark
from vqbench.testing import IMAGEBART_SCALE_NET, TRANSFORMER

from .test_config import METRICS

GEOMETRY = ((4, 4), 16)
BIG = {"name": "autoregressive", "label": "big", "params": {"backbone": {"name": "transformer", "dim": 64, "depth": 4, "heads": 2, "dim_head": 16}}}
SMALL = {"name": "absorbing", "label": "matched", "params": {"backbone": {"name": "transformer", "dim": 16, "depth": 2, "heads": 2, "dim_head": 16}}}


def bench(*priors) -> dict:
    data = {"name": "synthetic_latents", "params": {"kind": "iid", "h": 4, "w": 4, "codebook_size": 16, "count": 40}}
    return parse_benchmark({"name": "m", "dataset": data, "priors": list(priors)}, METRICS)


def test_the_matched_row_gets_the_width_closest_to_the_reference_count():
    regs = vqbench.registries()
    cells = plan_cells(bench(BIG, {**SMALL, "match_params": "big"}), regs)
    target = count_params(regs.priors.get("autoregressive"), BIG["params"], "p", GEOMETRY)
    matched = next(c for c in cells if c.variant.label == "matched").variant.params
    width = matched["backbone"]["dim"]
    assert width % STEP == 0 and width != SMALL["params"]["backbone"]["dim"]
    assert {k: v for k, v in matched["backbone"].items() if k != "dim"} == {k: v for k, v in SMALL["params"]["backbone"].items() if k != "dim"}
    absorbing = regs.priors.get("absorbing")
    errors = {
        w: abs(count_params(absorbing, with_width(absorbing, matched, w, "p"), "p", GEOMETRY) - target) for w in (width - STEP, width, width + STEP)
    }
    assert errors[width] == min(errors.values()) and errors[width] < 0.1 * target  # within 10 %: a matched comparison


@pytest.mark.parametrize(
    "rows, needle",
    [
        ((BIG, {**SMALL, "match_params": "bigg"}), "no row 'bigg'"),
        ((BIG, {**SMALL, "match_params": "matched"}), "names this row itself"),
        ((BIG, {"name": "independent", "label": "matched", "match_params": "big"}), "no network width to set"),
    ],
)
def test_bad_match_params_are_refused_naming_the_key(rows, needle):
    with pytest.raises(ConfigError, match=r"priors\[1\]\.match_params") as err:
        plan_cells(bench(*rows), vqbench.registries())
    assert needle in str(err.value)


def test_imagebart_with_more_scales_is_shrunk_to_the_same_total():
    """ImageBART's paper compares chains of different length at a fixed total size: every scale's network narrows."""
    regs = vqbench.registries()
    top = {k: v for k, v in TRANSFORMER.items() if k != "class_conditional"}
    nets = {"scale_net": {**IMAGEBART_SCALE_NET, "dim": 96}, "top_backbone": {**top, "dim": 96}}  # wide enough for steps of 8
    two = {"name": "imagebart", "label": "n2", "params": {"scales": 2, **nets}}
    four = {"name": "imagebart", "label": "n4", "params": {"scales": 4, **nets}, "match_params": "n2"}
    cells = plan_cells(bench(two, four), regs)
    cls = regs.priors.get("imagebart")
    target = count_params(cls, two["params"], "p", GEOMETRY)
    matched = next(c for c in cells if c.variant.label == "n4").variant.params
    assert matched["scale_net"]["dim"] == matched["top_backbone"]["dim"] < 96
    assert abs(count_params(cls, matched, "p", GEOMETRY) - target) < 0.1 * target
