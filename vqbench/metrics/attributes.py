"""Label-level metrics from a classifier trained on the benchmark's own labelled images (the ``classifier`` feature
extractor): class accuracy of class-conditional samples, and the distance between the samples' predicted factor
distribution (marginals and pairwise joints) and the true one, with the fraction of confidently predicted samples."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from ..errors import ConfigError
from ..interfaces import Column, Metric


@runtime_checkable
class LabelPredictor(Protocol):
    """A feature extractor that also predicts the label columns of images (``plugins/classifier.py``)."""

    label_names: tuple[str, ...]
    cardinalities: tuple[int, ...]
    held_out_labels: np.ndarray  # N×K labels of the held-out split ...
    held_out_probs: list[torch.Tensor]  # ... and the predicted probabilities per column (N×K_j each)

    def predict(self, images: torch.Tensor) -> list[torch.Tensor]: ...


def distribution(labels: np.ndarray, columns: tuple[int, ...], cardinalities: tuple[int, ...]) -> np.ndarray:
    """Empirical joint distribution of ``columns`` of integer labels (N×K), an array of shape (K_c for c in columns)."""
    shape = tuple(cardinalities[c] for c in columns)
    flat = np.ravel_multi_index(tuple(labels[:, c] for c in columns), shape)
    counts = np.bincount(flat, minlength=math.prod(shape)).astype(np.float64)
    return (counts / max(1, len(labels))).reshape(shape)


def total_variation(p: np.ndarray, q: np.ndarray) -> float:
    return 0.5 * float(np.abs(p - q).sum())


def factor_tv(predicted: np.ndarray, truth: np.ndarray, cardinalities: tuple[int, ...]) -> tuple[float, float]:
    """(mean marginal TV over columns, mean pairwise-joint TV over column pairs; NaN with one column) between the
    label distributions of two sets (N×K and M×K integer arrays)."""
    k = len(cardinalities)
    marginal = [total_variation(distribution(predicted, (j,), cardinalities), distribution(truth, (j,), cardinalities)) for j in range(k)]
    pairs = [
        total_variation(distribution(predicted, pair, cardinalities), distribution(truth, pair, cardinalities))
        for pair in itertools.combinations(range(k), 2)
    ]
    return float(np.mean(marginal)), float(np.mean(pairs)) if pairs else math.nan


def hard_labels(probs: list[torch.Tensor]) -> np.ndarray:
    """N×K argmax labels of per-column probabilities."""
    return torch.stack([p.argmax(dim=-1) for p in probs], dim=1).numpy().astype(np.int64)


def confident(probs: list[torch.Tensor], threshold: float) -> np.ndarray:
    """Boolean N: every column's top probability exceeds ``threshold``."""
    return torch.stack([p.max(dim=-1).values > threshold for p in probs], dim=1).all(dim=1).numpy()


def predictor(ctx: Any) -> LabelPredictor:
    """The run's label predictor (the feature extractor), or a ConfigError saying how to get one."""
    extractor = ctx.features.extractor if ctx.features is not None else None
    if not isinstance(extractor, LabelPredictor):
        raise ConfigError(
            "metrics.feature_extractor", "label metrics need `feature_extractor: classifier` (a network trained on the labelled images)"
        )
    return extractor


def sample_probs(ctx: Any, batch_size: int = 256) -> list[torch.Tensor]:
    """Per label column, the predicted probabilities of the decoded samples (computed once per cell)."""
    store = getattr(ctx, "cache", None)
    if store is not None and "label_probs" in store:
        return store["label_probs"]
    model = predictor(ctx)
    parts = [model.predict(ctx.decode(codes)) for codes in ctx.samples.split(batch_size)]
    probs = [torch.cat(column) for column in zip(*parts)]
    if store is not None:
        store["label_probs"] = probs
    return probs


def true_labels(ctx: Any) -> np.ndarray:
    """Labels of every train and held-out item: the data's factor distribution."""
    sets = [d.labels for d in (ctx.data.train, ctx.data.test) if d.labels is not None]
    if not sets:
        raise ConfigError("dataset", "the dataset has no labels")
    return np.concatenate(sets).astype(np.int64)


class FactorDistributionMetric(Metric):
    """TV distance between the samples' predicted label (factor) distribution and the data's, over marginals and
    pairwise joints, and the fraction of samples whose every label is predicted confidently ("valid")."""

    needs_images = True

    @dataclass
    class Config:
        confidence: float = 0.5  # a sample is valid when every head's top probability exceeds this
        seed: int = 0  # draw of the real-image baseline (as many held-out images as samples)

        def validate(self, key: str) -> None:
            if not 0.0 <= self.confidence < 1.0:
                raise ConfigError(f"{key}.confidence", f"must lie in [0, 1), got {self.confidence!r}")

    def columns(self, config) -> dict[str, Column]:
        return {
            "factor_tv_marginal": Column("lower", "factor TV (marginals)", 3),
            "factor_tv_pairwise": Column("lower", "factor TV (pairs)", 3),
            "valid_fraction": Column("higher", "valid", 3),
        }

    def compute(self, ctx, config) -> dict[str, float]:
        model = predictor(ctx)
        truth, probs = true_labels(ctx), sample_probs(ctx)
        marginal, pairwise = factor_tv(hard_labels(probs), truth, model.cardinalities)
        ctx.notes["factor_distribution"] = self.baseline(model, truth, len(ctx.samples), config)
        return {"factor_tv_marginal": marginal, "factor_tv_pairwise": pairwise, "valid_fraction": float(confident(probs, config.confidence).mean())}

    @staticmethod
    def baseline(model: LabelPredictor, truth: np.ndarray, count: int, config) -> str:
        """The same numbers for ``count`` real held-out images (classifier error + finite-sample floor)."""
        rng = np.random.default_rng(config.seed)
        n = len(model.held_out_labels)
        pick = np.sort(rng.choice(n, size=min(count, n), replace=False))
        probs = [p[torch.from_numpy(pick)] for p in model.held_out_probs]
        marginal, pairwise = factor_tv(hard_labels(probs), truth, model.cardinalities)
        valid = float(confident(probs, config.confidence).mean())
        return f"real held-out images (n={len(pick)}) score TV {marginal:.3f} (marginals), {pairwise:.3f} (pairs), valid {valid:.3f}"


class ClassAccuracyMetric(Metric):
    """Accuracy of the classifier's label-column-0 prediction on the samples against the class labels they were
    sampled with (class-conditional priors); NaN for unconditional sampling."""

    needs_images = True

    def columns(self, config) -> dict[str, Column]:
        return {"class_accuracy": Column("higher", "class accuracy", 3)}

    def compute(self, ctx, config) -> dict[str, float]:
        model = predictor(ctx)
        real = float((model.held_out_probs[0].argmax(-1).numpy() == model.held_out_labels[:, 0]).mean())
        ctx.notes["class_accuracy"] = f"the classifier scores {real:.3f} on real held-out images"
        if ctx.sample_labels is None or not ctx.prior.num_classes:
            ctx.notes["class_accuracy"] += "; samples drawn without class labels"
            return {"class_accuracy": math.nan}
        predicted = sample_probs(ctx)[0].argmax(dim=-1)
        return {"class_accuracy": float((predicted == ctx.sample_labels.cpu()).double().mean())}
