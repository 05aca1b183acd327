"""Label-level metrics from a classifier trained on the benchmark's own labelled images (the ``classifier`` feature
extractor): class accuracy of class-conditional samples, and the distance between the samples' predicted factor
distribution (marginals and pairwise joints) and the true one, with the fraction of confidently predicted samples,
each against its floor on as many real held-out images, and the label entropy of the samples relative to theirs."""

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


def marginal_tvs(predicted: np.ndarray, truth: np.ndarray, cardinalities: tuple[int, ...]) -> np.ndarray:
    """TV between the two sets' distributions of each column."""
    return np.array(
        [total_variation(distribution(predicted, (j,), cardinalities), distribution(truth, (j,), cardinalities)) for j in range(len(cardinalities))]
    )


def pair_tvs(predicted: np.ndarray, truth: np.ndarray, cardinalities: tuple[int, ...]) -> np.ndarray:
    """TV between the two sets' joint distributions of every column pair (in ``itertools.combinations`` order)."""
    pairs = itertools.combinations(range(len(cardinalities)), 2)
    return np.array([total_variation(distribution(predicted, p, cardinalities), distribution(truth, p, cardinalities)) for p in pairs])


def factor_tv(predicted: np.ndarray, truth: np.ndarray, cardinalities: tuple[int, ...]) -> tuple[float, float]:
    """(mean marginal TV over columns, mean pairwise-joint TV over column pairs; NaN with one column) between the
    label distributions of two sets (N×K and M×K integer arrays)."""
    pairs = pair_tvs(predicted, truth, cardinalities)
    return float(np.mean(marginal_tvs(predicted, truth, cardinalities))), float(np.mean(pairs)) if len(pairs) else math.nan


def label_entropy(labels: np.ndarray, cardinalities: tuple[int, ...]) -> np.ndarray:
    """Plug-in entropy (nats) of each label column of N×K integer labels."""
    out = []
    for j in range(len(cardinalities)):
        p = distribution(labels, (j,), cardinalities)
        p = p[p > 0]
        out.append(float(-(p * np.log(p)).sum()))
    return np.array(out)


def entropy_ratio(sample_entropy: np.ndarray, real_entropy: np.ndarray) -> float:
    """Mean over columns of min(H_samples / H_real, 1), columns whose real labels are constant left out (NaN if all
    are): the share of the real images' label diversity the samples reach, 0 for samples that all look alike."""
    varied = real_entropy > 0
    if not varied.any():
        return math.nan
    return float(np.minimum(sample_entropy[varied] / real_entropy[varied], 1.0).mean())


@dataclass
class LabelScores:
    """What ``factor_distribution`` measures of one set of predicted labels against the data's labels."""

    marginal: float  # mean marginal TV
    pairwise: float  # mean pairwise-joint TV
    pairs: np.ndarray  # TV of each column pair
    entropy: np.ndarray  # label entropy per column (nats)
    valid: float  # fraction confidently predicted


def label_scores(probs: list[torch.Tensor], truth: np.ndarray, cardinalities: tuple[int, ...], confidence: float) -> LabelScores:
    """Scores of images whose per-column predicted probabilities are ``probs``."""
    labels = hard_labels(probs)
    pairs = pair_tvs(labels, truth, cardinalities)
    pairwise = float(np.mean(pairs)) if len(pairs) else math.nan
    marginal = float(np.mean(marginal_tvs(labels, truth, cardinalities)))
    return LabelScores(marginal, pairwise, pairs, label_entropy(labels, cardinalities), float(confident(probs, confidence).mean()))


def real_pick(held_out: int, count: int, seed: int) -> np.ndarray:
    """Sorted positions of min(count, held_out) of the held-out images, drawn with ``seed``: the real-image floor's."""
    return np.sort(np.random.default_rng(seed).choice(held_out, size=min(count, held_out), replace=False))


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
    pairwise joints, and the fraction of samples whose every label is predicted confidently ("valid").

    The same numbers for as many real held-out images (``real_pick``, predicted once when the classifier is
    prepared) are the floor: classifier error plus finite-sample noise. Columns give that floor, each score above it,
    the worst column pair above its own floor (a lost dependence between two factors, diluted in the mean over
    pairs), and the samples' label entropy relative to the real images' (collapse, which TV and validity miss)."""

    needs_images = True

    @dataclass
    class Config:
        confidence: float = 0.5  # a sample is valid when every head's top probability exceeds this
        seed: int = 0  # draw of the real-image floor (as many held-out images as samples)

        def validate(self, key: str) -> None:
            if not 0.0 <= self.confidence < 1.0:
                raise ConfigError(f"{key}.confidence", f"must lie in [0, 1), got {self.confidence!r}")

    def columns(self, config) -> dict[str, Column]:
        return {
            "factor_tv_marginal": Column("lower", "factor TV (marginals)", 3),
            "factor_tv_pairwise": Column("lower", "factor TV (pairs)", 3),
            "valid_fraction": Column("higher", "valid", 3),
            "factor_entropy_ratio": Column("higher", "factor entropy / real (≤ 1)", 3),
            "factor_tv_excess": Column("lower", "factor TV − real floor", 3),
            "pair_tv_excess": Column("lower", "pair TV − real floor", 3),
            "pair_tv_max_excess": Column("lower", "worst pair TV − its floor", 3),
            "factor_tv_real_floor": Column("none", "factor TV of real images", 3),
            "pair_tv_real_floor": Column("none", "pair TV of real images", 3),
        }

    def compute(self, ctx, config) -> dict[str, float]:
        model = predictor(ctx)
        truth, cards = true_labels(ctx), model.cardinalities
        fake = label_scores(sample_probs(ctx), truth, cards, config.confidence)
        pick = torch.from_numpy(real_pick(len(model.held_out_labels), len(ctx.samples), config.seed))
        real = label_scores([p[pick] for p in model.held_out_probs], truth, cards, config.confidence)
        ctx.notes["factor_distribution"] = self.note(real, len(pick), len(ctx.samples))
        worst = float((fake.pairs - real.pairs).max()) if len(fake.pairs) else math.nan
        return {
            "factor_tv_marginal": fake.marginal,
            "factor_tv_pairwise": fake.pairwise,
            "valid_fraction": fake.valid,
            "factor_entropy_ratio": entropy_ratio(fake.entropy, real.entropy),
            "factor_tv_excess": fake.marginal - real.marginal,
            "pair_tv_excess": fake.pairwise - real.pairwise,
            "pair_tv_max_excess": worst,
            "factor_tv_real_floor": real.marginal,
            "pair_tv_real_floor": real.pairwise,
        }

    @staticmethod
    def note(real: LabelScores, count: int, samples: int) -> str:
        """The floor in words: ``count`` real held-out images (classifier error + finite-sample floor)."""
        text = f"real held-out images (n={count}) score TV {real.marginal:.3f} (marginals), {real.pairwise:.3f} (pairs), valid {real.valid:.3f}"
        if count < samples:
            text += f"; only {count} held-out images for {samples} samples, so the floor is higher than at {samples} and the excess flatters"
        return text


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
