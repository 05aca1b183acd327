"""The runner hands priors their class labels and the benchmark's precision, in training and in sampling."""

from __future__ import annotations

import numpy as np
import torch

from vqbench.latents import LatentDataset
from vqbench.precision import make_autocast
from vqbench.runner.evaluate import generate_samples
from vqbench.runner.schema import BudgetSection
from vqbench.runner.train import train_prior

from .example_plugin import TableConfig, TablePrior


class SpyPrior(TablePrior):
    """Records the labels and the autocast state of every loss and sample call."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls: list[tuple[str, torch.Tensor | None, bool]] = []

    def loss(self, codes, labels=None):
        self.calls.append(("loss", labels, torch.is_autocast_enabled("cpu")))
        return super().loss(codes, labels)

    def sample(self, n, latent_shape, generator, labels=None, **opts):
        self.calls.append(("sample", labels, torch.is_autocast_enabled("cpu")))
        return super().sample(n, latent_shape, generator, labels, **opts)


def dataset(tmp_path) -> LatentDataset:
    codes = np.random.default_rng(0).integers(0, 4, (12, 2, 2))
    labels = np.arange(12)[:, None] % 3
    return LatentDataset(tmp_path, codes, {"codebook_size": 4, "h": 2, "w": 2}, labels)


def test_training_passes_each_batch_its_labels_under_the_precision_autocast(tmp_path):
    data = dataset(tmp_path)
    prior = SpyPrior(TableConfig(0.1), 4, (2, 2), num_classes=3)
    budget = BudgetSection(steps=3, batch_size=5, checkpoint_every=10)
    train_prior(prior, data, budget, 1e-2, 0, tmp_path / "state.pt", torch.device("cpu"), make_autocast(torch.device("cpu"), "bf16"))
    losses = [c for c in prior.calls if c[0] == "loss"]
    assert len(losses) == 3 and all(autocast for _, _, autocast in losses)
    for _, labels, _ in losses:
        assert labels is not None and labels.shape == (5,) and labels.max() < 3


def test_sampling_passes_the_requested_labels_under_the_precision_autocast(tmp_path):
    prior = SpyPrior(TableConfig(0.1), 4, (2, 2), num_classes=3)
    labels = torch.tensor([0, 1, 2, 0, 1])
    drawn = generate_samples(prior, None, 5, 2, 0, torch.device("cpu"), make_autocast(torch.device("cpu"), "bf16"), {}, labels)
    codes, info = drawn.codes, drawn.info
    assert codes.shape == (5, 2, 2) and info["nfe"] == 1
    timed = [c for c in prior.calls if c[0] == "sample"]
    assert torch.equal(torch.cat([c[1] for c in timed]), labels) and all(c[2] for c in timed)
