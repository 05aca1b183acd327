"""Bootstrap CIs over a cell's generated samples (``metrics.bootstrap``): FID, KID and PRDC resample the sample
features only, seeded from the cell seed, and report percentiles centred on the point value."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

import vqbench
from vqbench.config import to_dict
from vqbench.errors import ConfigError
from vqbench.metrics.bootstrap import (
    apply_bootstrap,
    fid_bootstrap,
    interval_key,
    kid_bootstrap,
    kid_resampled,
    prdc_bootstrap,
    prdc_from_parts,
    prdc_parts,
    resamples,
)
from vqbench.metrics.fid import FIDMetric, KIDMetric, feature_statistics, fid_from_features, kid_from_features
from vqbench.metrics.prdc import PRDCMetric, prdc
from vqbench.runner.evaluate import metric_configs
from vqbench.runner.schema import MetricsSection, parse_benchmark


def gaussian(n: int, d: int, shift: float, seed: int) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) + shift


REAL, FAKE = gaussian(400, 4, 0.0, 0), gaussian(200, 4, 0.4, 1)
KID = {"subsets": 10, "subset_size": 100, "kid_seed": 0}
KID_ARGS = {"subsets": 10, "subset_size": 100, "seed": 0}


def all_intervals(seed: int) -> dict[str, float]:
    mu, sigma = feature_statistics(REAL)
    kid = kid_from_features(REAL, FAKE, KID["subsets"], KID["subset_size"], KID["kid_seed"])[0]
    return (
        fid_bootstrap(mu, sigma, FAKE, fid_from_features(REAL, FAKE), 30, seed)
        | kid_bootstrap(REAL, FAKE, kid, *KID.values(), 30, seed)
        | prdc_bootstrap(REAL, FAKE, prdc(REAL, FAKE, 5), 5, 30, seed)
    )


def centred(draws: list[float], point: float) -> list[float]:
    """The expected (low, high, bias): 2.5/97.5 percentiles of the draws shifted by their mean minus the point."""
    bias = float(np.mean(draws)) - point
    return [*(np.percentile(draws, [2.5, 97.5]) - bias), bias]


def test_each_interval_is_the_centred_percentiles_over_resamples_of_the_samples_alone():
    index = list(resamples(len(FAKE), 30, 7))  # the reference stays as it is
    mu, sigma = feature_statistics(REAL)
    fid = fid_from_features(REAL, FAKE)
    got = fid_bootstrap(mu, sigma, FAKE, fid, 30, 7)
    assert [got["fid_ci_low"], got["fid_ci_high"], got["fid_boot_bias"]] == pytest.approx(
        centred([fid_from_features(REAL, FAKE[i]) for i in index], fid)
    )
    kid = kid_from_features(REAL, FAKE, **KID_ARGS)[0]
    got = kid_bootstrap(REAL, FAKE, kid, *KID.values(), 30, 7)
    draws = [kid_resampled(REAL, FAKE[i], i, *KID.values()) for i in index]
    assert [got["kid_ci_low"], got["kid_ci_high"], got["kid_boot_bias"]] == pytest.approx(centred(draws, kid))
    point = prdc(REAL, FAKE, 5)
    got = prdc_bootstrap(REAL, FAKE, point, 5, 30, 7)
    for name in ("precision", "density"):  # of the resampled samples, by prdc itself
        draws = [prdc(REAL, FAKE[i], 5)[name] for i in index]
        assert [got[f"{name}_ci_low"], got[f"{name}_ci_high"], got[f"{name}_boot_bias"]] == pytest.approx(centred(draws, point[name]))


def test_identical_sample_and_reference_features_give_a_fid_interval_near_zero():
    same = gaussian(400, 4, 0.0, 2)
    got = fid_bootstrap(*feature_statistics(same), same, 0.0, 40, 0)
    assert got["fid_ci_low"] == 0.0 and 0.0 < got["fid_ci_high"] < 0.05  # FID ≥ 0: the bound stays in range


def test_every_point_value_lies_inside_its_interval_on_a_toy_case():
    intervals = all_intervals(seed=0)
    mu, sigma = feature_statistics(REAL)
    points = {"fid": fid_from_features(REAL, FAKE), "kid": kid_from_features(REAL, FAKE, 10, 100, 0)[0]} | prdc(REAL, FAKE, 5)
    assert set(intervals) == {f"{name}_{key}" for name in points for key in ("ci_low", "ci_high", "boot_bias")}
    for name, point in points.items():
        assert intervals[f"{name}_ci_low"] < point < intervals[f"{name}_ci_high"], name


def test_the_same_seed_gives_the_same_intervals_and_another_seed_others():
    first, again, other = all_intervals(seed=3), all_intervals(seed=3), all_intervals(seed=4)
    assert first == again
    assert all(first[name] != other[name] for name in ("fid_ci_low", "kid_ci_high", "precision_ci_low", "density_ci_high"))


def test_kid_of_the_identity_resample_is_torch_fidelitys_and_copies_do_not_inflate_it():
    subsets, size, seed = 10, 100, 3
    assert kid_resampled(REAL, FAKE, torch.arange(len(FAKE)), subsets, size, seed) == pytest.approx(
        kid_from_features(REAL, FAKE, subsets, size, seed)[0], rel=1e-9
    )
    same = gaussian(200, 8, 0.0, 5)  # a resample repeats ~1/3 of the samples; copies must not count as near pairs
    reference = gaussian(400, 8, 0.0, 6)
    got = kid_bootstrap(reference, same, kid_from_features(reference, same, subsets, size, 0)[0], subsets, size, 0, 40, 0)
    assert abs(got["kid_boot_bias"]) < 0.25 * (got["kid_ci_high"] - got["kid_ci_low"])


def test_prdc_of_a_resample_keeps_the_reference_and_each_samples_radius():
    parts = prdc_parts(REAL, FAKE, 5)
    assert prdc_from_parts(parts, torch.arange(len(FAKE))) == pytest.approx(prdc(REAL, FAKE, 5))
    index = next(resamples(len(FAKE), 1, 0))
    direct = prdc(REAL, FAKE[index], 5)  # precision and density depend on the real balls only
    resampled = prdc_from_parts(parts, index)
    assert resampled["precision"] == pytest.approx(direct["precision"]) and resampled["density"] == pytest.approx(direct["density"])


def features(real: torch.Tensor, fake: torch.Tensor) -> SimpleNamespace:
    return SimpleNamespace(real=real, fake=lambda: fake, real_statistics=lambda: feature_statistics(real))


@pytest.mark.parametrize(
    ("metric", "config"),
    [(FIDMetric(), None), (KIDMetric(), KIDMetric.Config(subsets=5, subset_size=50)), (PRDCMetric(), PRDCMetric.Config(nearest_k=3))],
)
def test_a_metric_adds_interval_values_only_with_bootstrap_on_and_seeds_them_from_the_cell(metric, config):
    ctx = SimpleNamespace(features=features(REAL, FAKE), seed=0, device=torch.device("cpu"))
    plain = metric.compute(ctx, config)
    assert not any(interval_key(name) for name in plain)  # N = 0: no interval keys
    metric.bootstrap = 6
    with_ci = metric.compute(ctx, config)
    assert {name for name in with_ci if not interval_key(name)} == set(plain)
    assert {name.rsplit("_", 2)[0] for name in with_ci if interval_key(name)} == set(metric.columns(config)) - {"kid_subset_std"}
    assert with_ci == metric.compute(ctx, config)
    assert with_ci != metric.compute(SimpleNamespace(**(vars(ctx) | {"seed": 1})), config)
    assert not any(interval_key(name) for name in metric.columns(config))  # never a report column


def test_metrics_bootstrap_reaches_fid_kid_and_prdc_and_must_not_be_negative():
    section = MetricsSection(enabled=["fid", "kid", "prdc", "latent_stats"], settings={"kid": {"subset_size": 10}})
    configured = metric_configs(section, vqbench.registries())
    apply_bootstrap(configured, 9)
    assert {name: getattr(metric, "bootstrap", None) for name, (metric, _) in configured.items()} == {
        "fid": 9, "kid": 9, "prdc": 9, "latent_stats": None,
    }  # fmt: skip
    bench = {"name": "b", "latents": {"train": "a", "test": "b"}, "priors": [{"name": "independent"}]}
    names = vqbench.registries().metrics.names()
    assert parse_benchmark(bench | {"metrics": {"bootstrap": 200}}, names).metrics.bootstrap == 200
    assert parse_benchmark(bench, names).metrics.bootstrap == 0
    assert "bootstrap" not in to_dict(MetricsSection())  # off: cell protocols (fingerprints) stay as before the option
    assert to_dict(MetricsSection(bootstrap=5))["bootstrap"] == 5
    with pytest.raises(ConfigError, match=r"metrics\.bootstrap: must be 0 \(off\) or a number of resamples, got -1"):
        parse_benchmark(bench | {"metrics": {"bootstrap": -1}}, names)
    with pytest.raises(ConfigError, match=r"metrics\.bootstrap: expected an integer"):
        parse_benchmark(bench | {"metrics": {"bootstrap": 2.5}}, names)
