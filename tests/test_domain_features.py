"""Label-level evaluation: factor-distribution distances with known values, validity over every head, the classifier
trained on toyfaces (accuracy, caching, refusal without labels), and labelled image folders."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

import vqbench
from vqbench.errors import ConfigError
from vqbench.metrics.attributes import FactorDistributionMetric, confident, factor_tv
from vqbench.runner.data import split_indices


def test_factor_tv_is_zero_against_itself_and_the_hand_computed_value_otherwise():
    rng = np.random.default_rng(0)
    labels = np.stack([rng.integers(3, size=200), rng.integers(4, size=200)], axis=1)
    assert factor_tv(labels, labels, (3, 4)) == (0.0, 0.0)
    # marginals agree exactly (both uniform on {0, 1}) but the joints differ: {00, 11} vs all four pairs
    truth = np.array([[0, 0], [1, 1]] * 2)
    independent = np.array([[0, 0], [0, 1], [1, 0], [1, 1]])
    marginal, pairwise = factor_tv(independent, truth, (2, 2))
    assert marginal == 0.0 and pairwise == pytest.approx(0.5)  # ½(|¼−½| + ¼ + ¼ + |¼−½|)
    # a shifted marginal: column 0 is 75 % zeros instead of 50 %; column 1 identical → mean over columns 0.25 / 2
    shifted = np.array([[0, 0], [0, 1], [0, 0], [1, 1]])
    marginal, _ = factor_tv(shifted, np.array([[0, 0], [0, 1], [1, 0], [1, 1]]), (2, 2))
    assert marginal == pytest.approx(0.125)
    # one column: no pairs
    assert math.isnan(factor_tv(labels[:, :1], labels[:, :1], (3,))[1])


def test_a_sample_is_valid_only_when_every_head_is_confident():
    sure, unsure = torch.tensor([[0.9, 0.1], [0.9, 0.1]]), torch.tensor([[0.8, 0.2], [0.5, 0.5]])
    assert confident([sure, unsure], 0.6).tolist() == [True, False]
    assert confident([sure, unsure], 0.85).tolist() == [False, False]


class FakePredictor:
    """Predicts label columns by reading them from pixel (0, 0) of each channel."""

    label_names, cardinalities = ("a", "b"), (2, 2)

    def __init__(self, held_out: np.ndarray):
        self.held_out_labels = held_out
        self.held_out_probs = [torch.nn.functional.one_hot(torch.from_numpy(held_out[:, j]), 2).float() for j in range(2)]

    def predict(self, images: torch.Tensor) -> list[torch.Tensor]:
        return [torch.nn.functional.one_hot(images[:, j, 0, 0].long(), 2).float() for j in range(2)]


def metric_context(samples: torch.Tensor, truth: np.ndarray) -> SimpleNamespace:
    data = SimpleNamespace(train=SimpleNamespace(labels=truth), test=SimpleNamespace(labels=None))
    decode = lambda codes: torch.cat([codes, codes[:, :1]], dim=1)[:, :, None, None].to(torch.uint8)  # noqa: E731 - label j in channel j
    return SimpleNamespace(features=SimpleNamespace(extractor=FakePredictor(truth)), data=data, samples=samples, decode=decode, notes={}, cache={})


def test_factor_distribution_metric_compares_predicted_factors_with_the_data():
    truth = np.array([[0, 0], [1, 1]] * 8)
    ctx = metric_context(torch.tensor([[0, 0], [0, 1], [1, 0], [1, 1]] * 4), truth)
    values = FactorDistributionMetric().compute(ctx, FactorDistributionMetric.Config())
    shown = {name: values[name] for name in ("factor_tv_marginal", "factor_tv_pairwise", "valid_fraction")}
    assert shown == {"factor_tv_marginal": 0.0, "factor_tv_pairwise": pytest.approx(0.5), "valid_fraction": 1.0}
    assert set(values) == set(FactorDistributionMetric().columns(FactorDistributionMetric.Config()))  # floor columns: tests/test_label_floor.py
    assert "real held-out images (n=16) score TV 0.000 (marginals), 0.000 (pairs)" in ctx.notes["factor_distribution"]
    same = metric_context(torch.from_numpy(truth), truth)
    assert FactorDistributionMetric().compute(same, FactorDistributionMetric.Config())["factor_tv_pairwise"] == 0.0
    with pytest.raises(ConfigError, match=r"metrics\.factor_distribution\.confidence"):
        vqbench.config.parse(FactorDistributionMetric.Config, {"confidence": 1.0}, "metrics.factor_distribution")


def test_label_metrics_without_the_classifier_name_the_setting():
    ctx = metric_context(torch.zeros(2, 2, dtype=torch.long), np.zeros((2, 2), dtype=np.int64))
    ctx.features = SimpleNamespace(extractor=torch.nn.Identity())
    with pytest.raises(ConfigError, match=r"feature_extractor: classifier"):
        FactorDistributionMetric().compute(ctx, FactorDistributionMetric.Config())


def toyfaces_bundle(tmp_path: Path, count: int = 2000, resolution: int = 16) -> SimpleNamespace:
    cls = vqbench.registries().datasets.get("toyfaces")
    source = cls(cls.Config(count=count), resolution)
    train, test = split_indices(count, 0.25, 0)
    (tmp_path / "train").mkdir(exist_ok=True)
    np.save(tmp_path / "train" / "source_index.npy", train)
    return SimpleNamespace(source=source, test_indices=test, train=SimpleNamespace(path=tmp_path / "train"))


@pytest.fixture(scope="module")
def toyfaces_classifier(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("toyfaces")
    extractor = vqbench.registries().feature_extractors.get("classifier")(seed=0)
    extractor.prepare(toyfaces_bundle(tmp), tmp / "cache", torch.device("cpu"))
    return extractor, tmp


def test_the_toyfaces_classifier_learns_the_generative_factors(toyfaces_classifier):
    extractor, _ = toyfaces_classifier
    acc = extractor.accuracy
    assert set(acc) == set(extractor.label_names) and len(extractor.held_out_probs) == 11  # one head per factor
    assert acc["background"] > 0.95 and acc["glasses"] > 0.9 and acc["skin_tone"] > 0.8 and acc["hair_style"] > 0.8
    assert np.mean(list(acc.values())) > 0.6  # chance is ≈ 0.26 averaged over the factors (1500 images at 16² here)
    assert "held-out accuracy" in extractor.description and "not comparable to Inception" in extractor.description
    assert ":" not in extractor.description  # the report cuts descriptions at a colon
    features = extractor(torch.randint(0, 256, (3, 3, 16, 16), dtype=torch.uint8))
    assert features.shape == (3, extractor.dims)


def test_the_classifier_is_cached_by_content(toyfaces_classifier, monkeypatch):
    trained, tmp = toyfaces_classifier
    import vqbench_plugins.classifier as plugin

    monkeypatch.setattr(plugin, "train_classifier", lambda *a, **k: pytest.fail("retrained despite the cache"))
    again = vqbench.registries().feature_extractors.get("classifier")(seed=0)
    again.prepare(toyfaces_bundle(tmp), tmp / "cache", torch.device("cpu"))
    assert again.weights_key == trained.weights_key and again.accuracy == trained.accuracy
    images = torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        assert torch.equal(again(images), trained(images))
    other = vqbench.registries().feature_extractors.get("classifier")(seed=1)  # another seed: another network
    with pytest.raises(pytest.fail.Exception, match="retrained"):
        other.prepare(toyfaces_bundle(tmp), tmp / "cache", torch.device("cpu"))


def test_the_classifier_refuses_unlabelled_data(tmp_path):
    bundle = toyfaces_bundle(tmp_path, count=20)
    bundle.source.labels = lambda: None
    extractor = vqbench.registries().feature_extractors.get("classifier")()
    with pytest.raises(ConfigError, match=r"metrics\.feature_extractor: the classifier is trained on labelled images"):
        extractor.prepare(bundle, tmp_path, torch.device("cpu"))
    with pytest.raises(ConfigError, match=r"metrics\.feature_weights"):
        vqbench.registries().feature_extractors.get("classifier")(weights="x.pt")


def folder(tmp_path: Path, rows: str | None, **params) -> object:
    for name, grey in (("a.png", 10), ("sub/b.png", 200)):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        Image.new("L", (8, 8), grey).save(tmp_path / name)
    if rows is not None:
        (tmp_path / "labels.csv").write_text(rows)
    cls = vqbench.registries().datasets.get("image_folder")
    return cls(cls.Config(path=str(tmp_path), labels=str(tmp_path / "labels.csv"), **params), 8)


def test_image_folder_reads_labels_by_filename(tmp_path):
    ds = folder(tmp_path, "filename,kind,size\nsub/b.png,1,2\na.png,0,3\n")
    ds.check("dataset.params")
    assert ds.labels().tolist() == [[0, 3], [1, 2]] and ds.label_names == ("kind", "size")
    before = ds.fingerprint()
    other = folder(tmp_path, "filename,kind,size\nsub/b.png,0,2\na.png,1,3\n")
    assert other.fingerprint() != before  # labels are part of the content


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (None, r"labels file .*labels\.csv.* not found"),
        ("filename,kind\na.png,0\n", r"labels\.csv has no row for 1 image\(s\), e\.g\. 'sub/b\.png'"),
        ("name,kind\na.png,0\n", r"first row must be `filename"),
        ("filename,kind\na.png,x\nsub/b.png,1\n", r"labels\.csv:2: labels must be integers"),
    ],
)
def test_image_folder_label_errors_name_the_key_and_the_file(tmp_path, rows, message):
    ds = folder(tmp_path, rows)
    with pytest.raises(ConfigError, match=r"dataset\.params\.labels: .*" + message):
        ds.check("dataset.params")
