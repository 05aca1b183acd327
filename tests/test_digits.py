"""The real ``digits`` dataset, the ``pixels`` identity tokenizer, the digit classifier and class accuracy, end to end."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

import vqbench
from vqbench.cli import main
from vqbench.errors import ConfigError
from vqbench.interfaces import float_to_uint8
from vqbench.metrics.attributes import ClassAccuracyMetric
from vqbench.runner.data import split_indices


def digits(resolution: int = 8, **params):
    cls = vqbench.registries().datasets.get("digits")
    return cls(cls.Config(**params), resolution)


def pixels(preset: str = "digits", **overrides):
    return vqbench.registries().tokenizers.get("pixels").from_preset(preset, overrides)


def test_digits_are_sklearns_real_images_with_their_classes():
    from sklearn.datasets import load_digits

    ds, truth = digits(), load_digits()
    assert len(ds) == 1797 and ds.label_names == ("digit",)
    image = ds.image(5)
    assert image.shape == (8, 8, 3) and image.dtype == np.uint8 and (image[..., 0] == image[..., 2]).all()
    assert np.array_equal(np.rint(image[..., 0].astype(np.float64) * 16 / 255), truth.images[5])  # 17 grey levels, exactly recoverable
    assert np.array_equal(ds.labels()[:, 0], truth.target)
    big = digits(16).image(5)
    assert np.array_equal(big[::2, ::2], image) and np.array_equal(big[1::2, 1::2], image)  # pixels repeated
    assert digits(16).fingerprint() != ds.fingerprint() != digits(count=100).fingerprint()
    with pytest.raises(ConfigError, match=r"dataset\.resolution: digits are 8×8"):
        digits(12)


def test_pixels_tokenizer_is_lossless_on_digits_and_decodes_grey():
    tok, ds = pixels(), digits()
    images, _ = ds.batch(range(20))
    codes = tok.encode(images)
    assert tok.codebook_size == 17 and tok.latent_shape(8) == (8, 8)
    assert torch.equal(codes, torch.from_numpy(np.stack([ds.levels(i) for i in range(20)])))  # the grey levels
    assert torch.equal(float_to_uint8(tok.decode(codes)), float_to_uint8(images))
    blocky = pixels(factor=2)
    assert blocky.latent_shape(8) == (4, 4) and blocky.decode(blocky.encode(images)).shape == images.shape
    with pytest.raises(ConfigError, match=r"tokenizer\.preset: unknown pixels preset 'digit'.*did you mean 'digits'"):
        pixels("digit")
    with pytest.raises(ConfigError, match=r"tokenizer\.params\.levels"):
        pixels(levels=1)


def test_pixels_tokenizer_saves_and_loads(tmp_path):
    tok = pixels(levels=5)
    tok.save(tmp_path / "tok.pt")
    loaded = vqbench.registries().tokenizers.get("pixels").load(tmp_path / "tok.pt")
    codes = torch.randint(5, (2, 8, 8))
    assert loaded.codebook_size == 5 and torch.equal(loaded.encode(loaded.decode(codes)), codes)


@pytest.fixture(scope="module")
def digit_classifier(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("digits")
    source = digits()
    train, test = split_indices(len(source), 0.25, 0)
    np.save(tmp / "source_index.npy", train)
    bundle = SimpleNamespace(source=source, test_indices=test, train=SimpleNamespace(path=tmp))
    extractor = vqbench.registries().feature_extractors.get("classifier")(seed=0)
    extractor.prepare(bundle, tmp / "cache", torch.device("cpu"))
    return extractor, source, test


def test_the_digit_classifier_is_accurate_on_held_out_digits(digit_classifier):
    extractor, _, test = digit_classifier
    assert extractor.label_names == ("digit",) and extractor.cardinalities == (10,)
    assert len(extractor.held_out_labels) == len(test)
    assert extractor.accuracy["digit"] > 0.95
    assert "held-out accuracy" in extractor.description and "1348 Digits images" in extractor.description


def test_class_accuracy_of_real_held_out_digits_is_the_held_out_accuracy(digit_classifier):
    """Samples that are the real held-out images, 'sampled' with their true labels, score exactly the classifier's
    held-out accuracy; with shuffled labels, about chance."""
    extractor, source, test = digit_classifier
    images, _ = source.batch(test)
    truth = torch.from_numpy(source.labels()[test, 0])
    ctx = SimpleNamespace(
        features=SimpleNamespace(extractor=extractor), samples=torch.arange(len(test))[:, None], sample_labels=truth,
        decode=lambda index: float_to_uint8(images[index[:, 0]]), prior=SimpleNamespace(num_classes=10), notes={}, cache={},
    )  # fmt: skip
    value = ClassAccuracyMetric().compute(ctx, None)["class_accuracy"]
    assert value == pytest.approx(extractor.accuracy["digit"], abs=1e-12)
    ctx.sample_labels, ctx.cache = truth[torch.randperm(len(truth), generator=torch.Generator().manual_seed(0))], {}
    assert ClassAccuracyMetric().compute(ctx, None)["class_accuracy"] < 0.25


def test_digits_benchmark_end_to_end(tmp_path):
    """A class-conditional prior beats the class-blind independent prior on class accuracy; the header names the
    classifier and its held-out accuracy."""
    config = {
        "name": "digits-smoke",
        "dataset": {"name": "digits", "resolution": 8, "params": {"count": 600}, "test_fraction": 0.25},
        "tokenizer": {"name": "pixels", "preset": "digits"},
        "priors": [
            {"name": "independent"},
            {"name": "autoregressive", "params": {"backbone": {"name": "transformer", "dim": 32, "depth": 1, "heads": 2, "dim_head": 16, "class_conditional": True}}},
        ],
        "budget": {"steps": 200, "batch_size": 32, "lr": 3e-3, "checkpoint_every": 200},
        "sampling": {"num_samples": 60, "batch_size": 60, "grid_size": 4, "class_labels": list(range(10))},
        "metrics": {"enabled": ["class_accuracy", "fid", "prdc", "nll"], "feature_extractor": "classifier", "num_real": 100},
        "device": "cpu", "precision": "fp32", "threads": 1, "out": str(tmp_path / "out"), "cache": str(tmp_path / "cache"),
    }  # fmt: skip
    (tmp_path / "b.yaml").write_text(yaml.safe_dump(config))
    assert main(["run", str(tmp_path / "b.yaml")]) == 0
    out = Path(config["out"])
    table = pd.read_csv(out / "report.csv", index_col="prior")
    assert table.loc["autoregressive", "class_accuracy"] > table.loc["independent", "class_accuracy"] + 0.15
    assert np.isfinite(table[["fid", "precision", "nll_bpt"]].to_numpy()).all()
    report = (out / "report.md").read_text()
    assert "classifier CNN trained here on 450 Digits images, held-out accuracy" in report and "random weights" not in report
    protocol = json.loads((out / "protocol.json").read_text())
    assert protocol["features"]["real_weights"] is True
