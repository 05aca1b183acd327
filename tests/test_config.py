"""Config parsing: key paths in errors, did-you-mean, overrides, sweeps."""

from __future__ import annotations

import pytest

from vqbench.config import parse, parse_override, set_dotted
from vqbench.errors import ConfigError
from vqbench.runner.schema import PriorSection, cell_id, expand_variants, parse_benchmark

METRICS = ["fid", "kid", "prdc", "nll", "latent_stats", "sample_time", "inpainting"]
BASE = {"name": "b", "dataset": {"name": "toyfaces"}, "tokenizer": {"preset": "tiny"}, "priors": [{"name": "independent"}]}


def test_unknown_key_names_the_path_and_suggests():
    with pytest.raises(ConfigError, match=r"budget\.stesp: unknown key — did you mean 'steps'\?"):
        parse_benchmark({**BASE, "budget": {"stesp": 3}}, METRICS)


def test_wrong_type_names_the_path():
    with pytest.raises(ConfigError, match=r"budget\.steps: expected an integer, got 'many'"):
        parse_benchmark({**BASE, "budget": {"steps": "many"}}, METRICS)
    with pytest.raises(ConfigError, match=r"priors\[0\]\.sweep"):
        parse_benchmark({**BASE, "priors": [{"name": "independent", "sweep": "x"}]}, METRICS)


def test_literal_values_and_metric_names_are_checked():
    with pytest.raises(ConfigError, match=r"precision: must be one of 'auto' \| 'fp32' \| 'bf16', got 'bf61'"):
        parse_benchmark({**BASE, "precision": "bf61"}, METRICS)
    with pytest.raises(ConfigError, match="unknown metric 'fdi' — did you mean 'fid'"):
        parse_benchmark({**BASE, "metrics": {"enabled": ["fdi"]}}, METRICS)


def test_metric_settings_move_under_settings():
    bench = parse_benchmark({**BASE, "metrics": {"prdc": {"nearest_k": 3}, "num_real": 10}}, METRICS)
    assert bench.metrics.settings == {"prdc": {"nearest_k": 3}} and bench.metrics.num_real == 10


def test_tokenizer_needs_exactly_one_source():
    with pytest.raises(ConfigError, match="exactly one of `preset`"):
        parse_benchmark({**BASE, "tokenizer": {"preset": "tiny", "checkpoint": "x.pt"}}, METRICS)


def test_overrides_set_nested_keys_and_list_items():
    key, value = parse_override("priors.0.params.temperature=0.7")
    assert (key, value) == ("priors.0.params.temperature", 0.7)
    bench = parse_benchmark(BASE, METRICS, [(key, value), ("budget.steps", 5)])
    assert bench.priors[0].params == {"temperature": 0.7} and bench.budget.steps == 5
    with pytest.raises(ConfigError, match="list index out of range"):
        set_dotted({"a": [1]}, "a.3", 0)
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        parse_override("novalue")


def test_sweep_is_a_cartesian_product():
    section = parse(
        PriorSection,
        {"name": "p", "params": {"backbone": {"dim": 8}}, "sweep": {"backbone.resample": ["1d", "2d"], "backbone.rotary": ["none", "1d", "2d"]}},
    )
    variants = expand_variants(section, "priors[0]")
    assert len(variants) == 6
    assert variants[0].params == {"backbone": {"dim": 8, "resample": "1d", "rotary": "none"}}
    assert variants[-1].name == "resample=2d,rotary=2d"
    assert cell_id(variants[-1], 3) == "p__resample=2d,rotary=2d__seed3"
    assert section.params == {"backbone": {"dim": 8}}  # not mutated


def test_floats_accept_yaml_exponent_strings():
    bench = parse_benchmark({**BASE, "budget": {"lr": "3e-5"}}, METRICS)
    assert bench.budget.lr == 3e-5
