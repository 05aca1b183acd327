"""Shared fixtures: tiny benchmarks that run on a 2-core CPU in seconds."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

import vqbench.plugins as plugins

torch.set_num_threads(2)

SMOKE = {
    "name": "smoke",
    "dataset": {"name": "toyfaces", "resolution": 16, "params": {"count": 240}, "test_fraction": 0.25},
    "tokenizer": {
        "preset": "tiny",
        "params": {"n_embed": 32, "ddconfig": {"resolution": 16, "ch": 16}},
        "train": {"steps": 12, "batch_size": 8, "disc_start": 6, "checkpoint_every": 4, "dead_code_restart_every": 4},
    },
    "priors": [{"name": "independent"}],
    "seeds": [0],
    "budget": {"steps": 8, "batch_size": 8, "checkpoint_every": 4},
    "sampling": {"num_samples": 24, "batch_size": 12, "grid_size": 4},
    "metrics": {
        "feature_extractor": "random-cnn",
        "num_real": 30,
        "kid": {"subsets": 5, "subset_size": 12},
        "prdc": {"nearest_k": 3},
        "inpainting": {"num_images": 6},
    },
    "device": "cpu",
    "precision": "fp32",  # the same numbers on every CPU, with or without native bf16
}


@pytest.fixture
def smoke_config(tmp_path: Path) -> dict:
    config = copy.deepcopy(SMOKE)
    config["out"] = str(tmp_path / "out")
    config["cache"] = str(tmp_path / "cache")
    return config


@pytest.fixture(autouse=True)
def fresh_plugins():
    """Each test sees only the installed plugins unless it registers more."""
    plugins.reset()
    yield
    plugins.reset()


def fit_for(prior, train: torch.Tensor, steps: int = 400, lr: float = 3e-3, batch_size: int = 128):
    """Train ``prior`` on random batches of ``train`` codes (timing belongs in benchmarks, not here)."""
    prior.train()
    optimizer = torch.optim.AdamW(prior.parameters(), lr=lr)
    for _ in range(steps):
        loss = prior.loss(train[torch.randint(len(train), (batch_size,))])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return prior.eval()
