"""The NLL metric reports the mean held-out NLL and its standard error over grids."""

from __future__ import annotations

import contextlib
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import vqbench
from vqbench import latents
from vqbench.config import parse
from vqbench.metrics.latent_stats import NLLMetric
from vqbench.runner.evaluate import EvalContext


def test_nll_and_its_standard_error_over_held_out_grids(tmp_path):
    rng = np.random.default_rng(0)
    train = torch.from_numpy(rng.integers(0, 6, size=(400, 3, 3)))
    test_codes = rng.integers(0, 6, size=(50, 3, 3))
    test = latents.open(latents.write(tmp_path / "test", test_codes, 6))
    cls = vqbench.registries().priors.get("independent")
    prior = cls(parse(cls.Config, {}), 6, (3, 3))
    prior.fit(train)
    ctx = SimpleNamespace(
        prior=prior, data=SimpleNamespace(test=test), device=torch.device("cpu"), seed=0, batch_size=7,
        autocast=contextlib.nullcontext, cache={}, notes={},
    )  # fmt: skip
    ctx.held_out_nll = lambda: EvalContext.held_out_nll(ctx)
    ctx.held_out_nll_se = lambda: EvalContext.held_out_nll_se(ctx)
    out = NLLMetric().compute(ctx, None)
    per_grid = prior.nll(torch.from_numpy(test_codes)).double()
    assert out["nll_bpt"] == pytest.approx(float(per_grid.mean()), abs=1e-9)
    assert out["nll_bpt_se"] == pytest.approx(float(per_grid.std() / np.sqrt(50)), rel=1e-9)
    assert set(NLLMetric().columns(None)) == {"nll_bpt", "nll_bpt_se"}
