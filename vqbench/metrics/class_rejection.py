"""``class_rejection``: class-conditional sampling with rejection by the benchmark's classifier (ImageBART's Table 2
protocol, after taming-transformers' rejection sampling). Per class, ``per_class`` slots are sampled with that
class, decoded and classified (label column 0 of the ``classifier`` feature extractor); a slot keeps its sample when
the classifier's probability of the intended class is at least the threshold, and a rejected slot is redrawn, up to
``max_draws`` draws in all, after which it stays empty. Per threshold: acceptance rate (kept / draws spent), class
accuracy of the kept samples and the FID of the kept samples against the reference set.

Every threshold sees the same draws: slot i's k-th draw is made only while it is below the highest threshold, and a
lower threshold accepts the first of those draws that reaches it, so the numbers for different thresholds differ only
by the threshold."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from ..config import positive
from ..errors import ConfigError
from ..interfaces import Column, Metric
from .attributes import predictor
from .fid import feature_statistics, frechet_distance


def threshold_tag(threshold: float) -> str:
    """0.9 → "0p9" (for column names)."""
    return f"{threshold:g}".replace(".", "p")


def conditions_on_class(prior: Any) -> bool:
    """Whether the prior samples given class labels: its own ``class_conditional`` or its backbone's."""
    if not getattr(prior, "num_classes", 0):
        return False
    if getattr(prior.config, "class_conditional", False):
        return True
    backbone = getattr(getattr(prior, "net", None), "config", None)
    return bool(getattr(backbone, "class_conditional", False))


@dataclass
class ClassRejectionConfig:
    thresholds: list[float] = field(default_factory=lambda: [0.0, 0.5, 0.9])
    max_draws: int = 4  # draws per slot at most: the first and up to max_draws − 1 redraws of rejected samples
    per_class: int = 16  # slots per class
    classes: list[int] | None = None  # default: every class of the prior

    def validate(self, key: str) -> None:
        if not self.thresholds or any(not 0.0 <= t <= 1.0 for t in self.thresholds):
            raise ConfigError(f"{key}.thresholds", f"list one or more probabilities in [0, 1], got {self.thresholds!r}")
        if len({threshold_tag(t) for t in self.thresholds}) != len(self.thresholds):
            raise ConfigError(f"{key}.thresholds", f"list each threshold once, got {self.thresholds!r}")
        positive(key, "max_draws", self.max_draws)
        positive(key, "per_class", self.per_class)
        if self.classes is not None and (not self.classes or min(self.classes) < 0):
            raise ConfigError(f"{key}.classes", f"list class indices (≥ 0), got {self.classes!r}")


@dataclass
class Draws:
    """Every draw made: per round k and slot i, the intended-class probability (NaN: not drawn), whether the
    classifier's top class is the intended one, and the sample's features."""

    prob: torch.Tensor  # max_draws × M
    correct: torch.Tensor  # max_draws × M bool
    features: torch.Tensor  # max_draws × M × D


def rejection_summary(draws: Draws, threshold: float) -> tuple[float, float, torch.Tensor]:
    """(acceptance rate, accuracy of the kept samples, their features) at ``threshold``."""
    accept = draws.prob >= threshold  # NaN (not drawn) compares False
    kept = accept.any(dim=0)
    first = accept.int().argmax(dim=0)  # the first accepting round of each kept slot
    spent = torch.where(kept, first + 1, (~draws.prob.isnan()).sum(dim=0))
    slots = torch.nonzero(kept).squeeze(1)
    accuracy = float(draws.correct[first[slots], slots].double().mean()) if len(slots) else math.nan
    return int(kept.sum()) / int(spent.sum()), accuracy, draws.features[first[slots], slots]


class ClassRejectionMetric(Metric):
    """Acceptance rate, class accuracy and FID of the kept samples of classifier-rejection sampling, per threshold;
    n/a for priors that do not condition on the class."""

    Config = ClassRejectionConfig
    needs_images = True

    def columns(self, config) -> dict[str, Column]:
        cols = {}
        for t in config.thresholds:
            tag = threshold_tag(t)
            cols[f"reject_{tag}_acceptance"] = Column("none", f"rejection p ≥ {t:g}: acceptance", 3)
            cols[f"reject_{tag}_accuracy"] = Column("higher", f"rejection p ≥ {t:g}: class accuracy of kept", 3)
            cols[f"reject_{tag}_fid"] = Column("lower", f"rejection p ≥ {t:g}: FID of kept", 2)
        return cols

    def compute(self, ctx, config: ClassRejectionConfig) -> dict[str, float]:
        out = {name: math.nan for name in self.columns(config)}
        model = predictor(ctx)
        if not conditions_on_class(ctx.prior):
            ctx.notes["class_rejection"] = f"n/a: {type(ctx.prior).__name__} does not condition on class labels"
            return out
        classes = config.classes if config.classes is not None else list(range(ctx.prior.num_classes))
        if max(classes) >= min(ctx.prior.num_classes, model.cardinalities[0]):
            raise ConfigError("metrics.class_rejection.classes", f"class {max(classes)} exceeds the {ctx.prior.num_classes} classes of the data")
        labels = torch.tensor(classes, dtype=torch.long).repeat_interleave(config.per_class)
        draws = self.draw(ctx, config, labels, model)
        mu_real, sigma_real = ctx.features.real_statistics()
        notes = []
        for t in config.thresholds:
            tag = threshold_tag(t)
            acceptance, accuracy, features = rejection_summary(draws, t)
            out[f"reject_{tag}_acceptance"], out[f"reject_{tag}_accuracy"] = acceptance, accuracy
            if len(features) >= 2:
                mu, sigma = feature_statistics(features)
                out[f"reject_{tag}_fid"] = frechet_distance(mu_real, sigma_real, mu, sigma)
            notes.append(f"p ≥ {t:g} keeps {len(features)}")
        slots = f"{len(classes)} classes × {config.per_class} slots, at most {config.max_draws} draws each"
        ctx.notes["class_rejection"] = f"{slots}; {', '.join(notes)}"
        return out

    @torch.inference_mode()
    def draw(self, ctx, config: ClassRejectionConfig, labels: torch.Tensor, model) -> Draws:
        """Draw rounds: every slot still below the highest threshold is sampled (with its class), decoded, classified."""
        m, strictest = len(labels), max(config.thresholds)
        prob = torch.full((config.max_draws, m), math.nan, dtype=torch.float64)
        correct = torch.zeros((config.max_draws, m), dtype=torch.bool)
        features = torch.zeros((config.max_draws, m, ctx.features.extractor.dims), dtype=torch.float64)
        g = torch.Generator(device=ctx.device).manual_seed(ctx.seed + 2_750_159)
        pending = torch.arange(m)
        for k in range(config.max_draws):
            for start in range(0, len(pending), ctx.batch_size):
                slots = pending[start : start + ctx.batch_size]
                with ctx.autocast():
                    codes = ctx.prior.sample(len(slots), ctx.prior.latent_shape, g, labels=labels[slots].to(ctx.device), **ctx.options)
                images = ctx.decode(codes.cpu())
                p = model.predict(images)[0]
                prob[k, slots] = p[torch.arange(len(slots)), labels[slots]].double()
                correct[k, slots] = p.argmax(dim=-1) == labels[slots]
                features[k, slots] = ctx.features.of(images, ctx.batch_size).double().cpu()
            pending = pending[prob[k, pending] < strictest]
            if not len(pending):
                break
        return Draws(prob, correct, features)
