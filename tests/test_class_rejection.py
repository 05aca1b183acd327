"""``class_rejection`` (ImageBART's Table 2 protocol): the bookkeeping of accepted draws per threshold, computed by hand;
on a random class-conditional ImageBART whose samples are of mixed quality for a classifier, the accuracy of the kept
samples rises with the threshold and the acceptance falls; n/a for a prior that ignores the class."""

from __future__ import annotations

import contextlib
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import vqbench
from vqbench.config import parse
from vqbench.errors import ConfigError
from vqbench.interfaces import FeatureExtractor
from vqbench.metrics.class_rejection import ClassRejectionMetric, Draws, rejection_summary
from vqbench.metrics.features import FeatureSet

TINY_NET = {"dim": 32, "encoder_depth": 1, "decoder_depth": 1, "heads": 2, "dim_head": 16}
TINY_TOP = {"name": "transformer", "dim": 32, "depth": 1, "heads": 2, "dim_head": 16}
NAN = math.nan


def test_each_threshold_keeps_the_first_draw_that_reaches_it():
    """Four slots, at most three draws; a slot is redrawn while below the highest threshold (0.9)."""
    prob = torch.tensor([[0.95, 0.2, 0.6, 0.1], [NAN, 0.7, 0.95, 0.3], [NAN, 0.92, NAN, 0.4]], dtype=torch.float64)
    correct = torch.tensor([[True, False, True, False], [False, True, True, False], [False, True, False, False]])
    features = torch.arange(12, dtype=torch.float64).view(3, 4, 1)
    draws = Draws(prob, correct, features)
    acceptance, accuracy, kept = rejection_summary(draws, 0.0)
    assert (acceptance, accuracy, kept.flatten().tolist()) == (1.0, 0.5, [0.0, 1.0, 2.0, 3.0])
    acceptance, accuracy, kept = rejection_summary(draws, 0.5)  # slots 0, 1 (2nd draw), 2; slot 3 spends 3 draws
    assert (acceptance, accuracy, kept.flatten().tolist()) == (3 / 7, 1.0, [0.0, 5.0, 2.0])
    acceptance, accuracy, kept = rejection_summary(draws, 0.9)  # slots 0, 1 (3rd draw), 2 (2nd draw)
    assert (acceptance, accuracy, kept.flatten().tolist()) == (3 / 9, 1.0, [0.0, 9.0, 6.0])


class CodeClassifier(FeatureExtractor):
    """Reads the code grid from an "image" (uint8 codes, 3 identical channels); class c's logit is 2·(count of code c
    in the grid), so a random prior's samples range from clearly one class to ambiguous. Features: the flattened grid."""

    dims, real_weights, description = 4, True, "code classifier"
    label_names, cardinalities = ("cls",), (3,)
    held_out_labels = np.zeros((1, 1), dtype=np.int64)
    held_out_probs = [torch.ones(1, 3) / 3]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return images[:, 0].flatten(1).float()

    def predict(self, images: torch.Tensor) -> list[torch.Tensor]:
        codes = images[:, 0].flatten(1).long()
        counts = torch.stack([(codes == c).sum(1) for c in range(3)], dim=1).float()
        return [torch.softmax(2.0 * counts, dim=-1)]


def context(class_conditional: bool = True) -> SimpleNamespace:
    cls = vqbench.registries().priors.get("imagebart")
    torch.manual_seed(0)
    params = {"scales": 2, "scale_net": TINY_NET, "top_backbone": TINY_TOP, "class_conditional": class_conditional}
    prior = cls(parse(cls.Config, params, "params"), 4, (2, 2), num_classes=3).eval()
    extractor = CodeClassifier()
    real = torch.randint(4, (200, 2, 2), generator=torch.Generator().manual_seed(1)).to(torch.uint8)
    features = FeatureSet(extractor, extractor(real[:, None].expand(-1, 3, -1, -1)).double(), lambda: [], torch.device("cpu"), 0)
    decode = lambda codes: codes.to(torch.uint8)[:, None].expand(-1, 3, -1, -1)  # noqa: E731
    return SimpleNamespace(
        prior=prior, features=features, decode=decode, options={}, batch_size=64, seed=0, device=torch.device("cpu"),
        autocast=contextlib.nullcontext, notes={}, sample_labels=None,
    )  # fmt: skip


def test_kept_samples_grow_more_accurate_and_rarer_as_the_threshold_rises():
    thresholds = [0.0, 0.3, 0.6, 0.9]
    config = parse(ClassRejectionMetric.Config, {"thresholds": thresholds, "max_draws": 3, "per_class": 40}, "metrics.class_rejection")
    ctx = context()
    values = ClassRejectionMetric().compute(ctx, config)
    acceptance = [values[f"reject_{t:g}_acceptance".replace(".", "p")] for t in thresholds]
    accuracy = [values[f"reject_{t:g}_accuracy".replace(".", "p")] for t in thresholds]
    fid = [values[f"reject_{t:g}_fid".replace(".", "p")] for t in thresholds]
    assert acceptance[0] == 1.0 and all(a > b for a, b in zip(acceptance, acceptance[1:])), acceptance
    assert accuracy[0] < 0.7 and accuracy[0] < accuracy[1] < accuracy[2] == accuracy[3] == 1.0, accuracy  # p ≥ 0.6 is the top class
    assert all(math.isfinite(f) and f >= 0 for f in fid), fid
    assert ctx.notes["class_rejection"].startswith("3 classes × 40 slots, at most 3 draws each; p ≥ 0 keeps 120")
    kept = int(ctx.notes["class_rejection"].rsplit("p ≥ 0.9 keeps ", 1)[1])
    assert kept / 120 > 1.5 * acceptance[3]  # rejected slots were redrawn: more kept than one round's acceptance gives


def test_priors_that_ignore_the_class_are_na_and_the_classifier_is_required():
    config = parse(ClassRejectionMetric.Config, {}, "metrics.class_rejection")
    ctx = context(class_conditional=False)
    values = ClassRejectionMetric().compute(ctx, config)
    assert all(math.isnan(v) for v in values.values()) and len(values) == 9
    assert ctx.notes["class_rejection"] == "n/a: ImageBARTPrior does not condition on class labels"
    ctx.features = SimpleNamespace(extractor=torch.nn.Identity())
    with pytest.raises(ConfigError, match="feature_extractor: classifier"):
        ClassRejectionMetric().compute(ctx, config)
    with pytest.raises(ConfigError, match=r"metrics\.class_rejection\.thresholds"):
        parse(ClassRejectionMetric.Config, {"thresholds": [0.5, 1.5]}, "metrics.class_rejection")
