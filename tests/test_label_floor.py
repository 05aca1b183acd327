"""The real-image floor of ``factor_distribution`` (floor, excess, worst pair, entropy ratio) with a known labeller in
place of the trained classifier, and toyfaces' optional hair-colour/background dependence."""

from __future__ import annotations

import hashlib
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from vqbench_plugins.toyfaces import LABEL_CARDINALITY, LABEL_NAMES

import vqbench
from vqbench.errors import ConfigError
from vqbench.metrics.attributes import FactorDistributionMetric, distribution, pair_tvs, real_pick
from vqbench.runner.data import split_indices

HAIR, BACKGROUND = LABEL_NAMES.index("hair_colour"), LABEL_NAMES.index("background")
CONFIG = FactorDistributionMetric.Config()


class LabelReader:
    """A known labeller: an image is its label row (channel 0, row 0, column j = label j); with ``misread``, column
    0's top value is read as the one below (a classifier error the floor must contain)."""

    label_names: tuple[str, ...] = ()

    def __init__(self, cardinalities: tuple[int, ...], held_out: np.ndarray, misread: bool = False):
        self.cardinalities, self.misread = cardinalities, misread
        self.held_out_labels = held_out
        self.held_out_probs = self.predict(images(torch.from_numpy(held_out)))

    def predict(self, batch: torch.Tensor) -> list[torch.Tensor]:
        labels = batch[:, 0, 0, :].long()
        if self.misread:
            labels[:, 0] = labels[:, 0].clamp(max=self.cardinalities[0] - 2)
        return [torch.nn.functional.one_hot(labels[:, j], k).float() for j, k in enumerate(self.cardinalities)]


def images(codes: torch.Tensor) -> torch.Tensor:
    """uint8 N×3×1×K images of label rows N×K (or N×1×K grids)."""
    return codes.reshape(len(codes), 1, 1, -1).expand(-1, 3, -1, -1).to(torch.uint8)


def context(samples: np.ndarray, train: np.ndarray, test: np.ndarray, cards: tuple[int, ...], misread: bool = False) -> SimpleNamespace:
    """A metric context whose samples (label rows N×K, as N×1×K grids) decode to images the reader reads back."""
    data = SimpleNamespace(train=SimpleNamespace(labels=train), test=SimpleNamespace(labels=test))
    extractor = LabelReader(cards, test, misread)
    codes = torch.from_numpy(np.ascontiguousarray(samples))[:, None, :]
    return SimpleNamespace(features=SimpleNamespace(extractor=extractor), data=data, samples=codes, decode=images, notes={}, cache={})


def score(
    samples: np.ndarray, train: np.ndarray, test: np.ndarray, cards: tuple[int, ...], misread: bool = False, config: object = CONFIG
) -> dict[str, float]:
    return FactorDistributionMetric().compute(context(samples, train, test, cards, misread), config)


CARDS = (3, 4, 2, 5)


def skewed_labels(n: int, seed: int) -> np.ndarray:
    """Labels whose column 1 depends on column 0 and whose column 3 leans to low values."""
    rng = np.random.default_rng(seed)
    a = rng.integers(3, size=n)
    b = np.where(rng.random(n) < 0.6, a, rng.integers(4, size=n))
    return np.stack([a, b, rng.integers(2, size=n), np.minimum(rng.geometric(0.4, size=n) - 1, 4)], axis=1)


def test_the_floor_is_the_metric_on_as_many_real_held_out_images():
    """Whatever the samples, the floor columns are the metric's own values on the seeded pick of real held-out images
    (classifier error included); samples that are those images score zero excess and entropy ratio 1."""
    train, test = skewed_labels(600, 0), skewed_labels(400, 1)
    uniform = np.stack([np.random.default_rng(2).integers(k, size=256) for k in CARDS], axis=1)
    values = score(uniform, train, test, CARDS, misread=True)
    assert values == score(uniform, train, test, CARDS, misread=True)  # deterministic
    real = score(test[real_pick(len(test), 256, CONFIG.seed)], train, test, CARDS, misread=True)
    assert values["factor_tv_real_floor"] == real["factor_tv_marginal"] == real["factor_tv_real_floor"]
    assert values["pair_tv_real_floor"] == real["factor_tv_pairwise"] == real["pair_tv_real_floor"]
    assert real["factor_tv_excess"] == real["pair_tv_excess"] == real["pair_tv_max_excess"] == 0.0
    assert real["factor_entropy_ratio"] == 1.0
    exact = score(test[real_pick(len(test), 256, CONFIG.seed)], train, test, CARDS)
    assert values["factor_tv_real_floor"] > exact["factor_tv_real_floor"]  # the misread column 0 is in the floor
    # the draw is the one the note has always described, and ``seed`` chooses it
    assert np.array_equal(real_pick(400, 256, 0), np.sort(np.random.default_rng(0).choice(400, size=256, replace=False)))
    reseeded = FactorDistributionMetric.Config(seed=5)
    floor5 = score(uniform, train, test, CARDS, misread=True, config=reseeded)["factor_tv_real_floor"]
    assert floor5 == score(test[real_pick(len(test), 256, 5)], train, test, CARDS, misread=True)["factor_tv_marginal"]
    assert floor5 != values["factor_tv_real_floor"]


def test_the_excess_is_the_value_minus_the_floor_and_the_worst_pair_its_own():
    train, test = skewed_labels(600, 0), skewed_labels(400, 1)
    samples = skewed_labels(256, 3)
    samples[:, 1] = np.random.default_rng(3).permutation(samples[:, 1])  # the marginals kept, column 1's tie to 0 lost
    values = score(samples, train, test, CARDS)
    assert values["factor_tv_excess"] == pytest.approx(values["factor_tv_marginal"] - values["factor_tv_real_floor"], abs=1e-12)
    assert values["pair_tv_excess"] == pytest.approx(values["factor_tv_pairwise"] - values["pair_tv_real_floor"], abs=1e-12)
    assert values["factor_tv_excess"] != 0.0 and values["pair_tv_excess"] > 0.02
    truth = np.concatenate([train, test])
    per_pair = pair_tvs(samples, truth, CARDS) - pair_tvs(test[real_pick(len(test), 256, 0)], truth, CARDS)
    assert values["pair_tv_max_excess"] == pytest.approx(per_pair.max(), abs=1e-12)
    assert per_pair.argmax() == 0 and per_pair.max() > 0.2  # the pair (0, 1): the one dependence the samples lost


def test_a_collapsed_prior_is_valid_but_scores_zero_entropy_ratio():
    train, test = skewed_labels(600, 0), skewed_labels(400, 1)
    collapsed = score(np.repeat(test[:1], 256, axis=0), train, test, CARDS)
    assert collapsed["valid_fraction"] == 1.0 and collapsed["factor_entropy_ratio"] == 0.0
    two_faces = score(np.repeat(test[:2], 128, axis=0), train, test, CARDS)
    assert 0.0 < two_faces["factor_entropy_ratio"] < 0.5
    # more diverse than the real images (uniform columns against skewed ones): capped at 1, TV still pays
    balanced = np.stack([np.arange(256) % k for k in CARDS], axis=1)  # each column as even as 256 allows
    spread = score(balanced, train, test, CARDS)
    assert spread["factor_entropy_ratio"] == 1.0 and spread["factor_tv_excess"] > 0.05


def toyfaces(count: int, resolution: int = 16, **params):
    cls = vqbench.registries().datasets.get("toyfaces")
    return cls(vqbench.config.parse(cls.Config, {"count": count, **params}, "dataset.params"), resolution)


def mutual_information(labels: np.ndarray, a: int, b: int) -> float:
    """Plug-in mutual information (nats) between label columns ``a`` and ``b``."""
    joint = distribution(labels, (a, b), LABEL_CARDINALITY)
    outer = joint.sum(1, keepdims=True) * joint.sum(0, keepdims=True)
    mask = joint > 0
    return float((joint[mask] * np.log(joint[mask] / outer[mask])).sum())


def test_correlated_toyfaces_tie_hair_colour_to_background_and_keep_the_marginals():
    independent = toyfaces(3000).labels()
    half, tied = toyfaces(3000, correlation=0.5), toyfaces(3000, correlation=1)
    half_labels, tied_labels = half.labels(), tied.labels()
    assert mutual_information(independent, HAIR, BACKGROUND) < 0.01  # plug-in bias alone is ≈ 0.003 nats here
    assert 0.2 < mutual_information(half_labels, HAIR, BACKGROUND) < mutual_information(tied_labels, HAIR, BACKGROUND)
    for column in (HAIR, BACKGROUND):  # uniform marginals whatever the dependence
        share = distribution(tied_labels, (column,), LABEL_CARDINALITY)
        assert np.abs(share - 1 / LABEL_CARDINALITY[column]).max() < 0.03
    others = [j for j in range(len(LABEL_NAMES)) if j not in (HAIR, BACKGROUND)]
    assert np.array_equal(tied_labels[:, others], independent[:, others])  # every other factor as before
    changed = int(np.flatnonzero((tied_labels != independent).any(axis=1))[0])
    assert not np.array_equal(tied.image(changed), toyfaces(3000).image(changed))  # the images follow the labels
    assert len({toyfaces(10).fingerprint(), toyfaces(10, correlation=0.5).fingerprint(), toyfaces(10, correlation=1).fingerprint()}) == 3
    with pytest.raises(ConfigError, match=r"dataset\.params\.correlation: must lie in \[0, 1\]"):
        toyfaces(10, correlation=1.5)


def test_pair_tv_above_the_floor_detects_a_lost_dependence():
    """Samples keeping every marginal but with hair colour shuffled across images: the worst pair's TV above its
    real-image floor jumps when the data tie hair colour to background, and not when they do not; the mean over the
    55 pairs moves by ≈ 0.01 only, about its own draw-to-draw spread at 256 samples."""
    for correlation, lost in ((1.0, True), (0.0, False)):
        labels = toyfaces(2000, correlation=correlation).labels()
        train_idx, test_idx = split_indices(2000, 0.25, 0)
        train, test = labels[train_idx], labels[test_idx]
        real = train[:256]  # a perfect prior: real images the floor did not draw
        shuffled = real.copy()
        shuffled[:, HAIR] = np.random.default_rng(0).permutation(shuffled[:, HAIR])
        kept, broken = score(real, train, test, LABEL_CARDINALITY), score(shuffled, train, test, LABEL_CARDINALITY)
        assert broken["factor_tv_marginal"] == kept["factor_tv_marginal"]
        assert kept["pair_tv_max_excess"] < 0.15 and abs(kept["pair_tv_excess"]) < 0.02
        if lost:
            assert broken["pair_tv_max_excess"] > 0.4 and broken["pair_tv_excess"] > kept["pair_tv_excess"] + 0.005
        else:
            assert broken["pair_tv_max_excess"] < 0.15


TOYFACES_DIGEST = "4adfdc0f4fb514d876013c859d97a663894f4360615396591a17d907e5a2f1db"  # computed before `correlation` existed


def test_default_toyfaces_are_byte_identical_to_before_the_correlation_option():
    h = hashlib.sha256()
    for resolution, count, seed in ((16, 200, 0), (32, 12, 3)):
        source = toyfaces(count, resolution, seed=seed)
        h.update(source.fingerprint().encode())
        h.update(np.ascontiguousarray(source.labels()).tobytes())
        for i in range(0, count, 5):
            h.update(source.image(i).tobytes())
    assert h.hexdigest() == TOYFACES_DIGEST


def test_the_columns_declare_their_directions():
    columns = FactorDistributionMetric().columns(CONFIG)
    assert {name: c.direction for name, c in columns.items() if "floor" in name} == {"factor_tv_real_floor": "none", "pair_tv_real_floor": "none"}
    assert columns["factor_entropy_ratio"].direction == "higher"
    assert all(columns[name].direction == "lower" for name in ("factor_tv_excess", "pair_tv_excess", "pair_tv_max_excess"))
    one = np.zeros((4, 1), dtype=np.int64)  # one constant column: no pairs, no entropy to compare with
    values = score(one, one, one, (1,))
    assert math.isnan(values["pair_tv_max_excess"]) and math.isnan(values["factor_entropy_ratio"]) and values["factor_tv_excess"] == 0.0
