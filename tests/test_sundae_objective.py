"""SUNDAE's unrolled objective against a hand computation with a deterministic stand-in network."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

import vqbench
from vqbench.config import parse

V = 6


class ShiftNet(nn.Module):
    """Logits that put (almost) all mass on code (input + 1) mod V, varying a little by position; records inputs."""

    def __init__(self):
        super().__init__()
        self.inputs: list[torch.Tensor] = []
        self.bias = nn.Parameter(torch.linspace(-1.0, 1.0, V))

    def forward(self, codes: torch.Tensor, labels=None) -> torch.Tensor:
        self.inputs.append(codes.clone())
        return 40.0 * F.one_hot((codes + 1) % V, V).float() + self.bias


def make_prior(unroll_steps: int):
    cls = vqbench.registries().priors.get("sundae")
    prior = cls(
        parse(cls.Config, {"unroll_steps": unroll_steps, "backbone": {"name": "hourglass", "dim": 8, "depth": [1, 1, 1], "heads": 1, "dim_head": 8}}),
        V,
        (4, 4),
    )
    prior.net = ShiftNet()
    return prior


def test_loss_is_the_mean_cross_entropy_over_unroll_steps_each_on_the_previous_samples():
    codes = torch.randint(V, (5, 4, 4), generator=torch.Generator().manual_seed(0))
    target = codes.flatten(1)
    for unroll in (1, 2, 3):
        prior = make_prior(unroll)
        torch.manual_seed(1)
        loss = prior.loss(codes)
        inputs = prior.net.inputs
        assert len(inputs) == unroll
        assert (inputs[0] != target).any() and (inputs[0] == target).any()  # a partial corruption of the codes
        for before, after in zip(inputs, inputs[1:]):  # each pass sees the model's own samples of the previous one
            assert torch.equal(after, (before + 1) % V)
        bias = prior.net.bias.detach()
        per_step = [F.cross_entropy((40.0 * F.one_hot((x + 1) % V, V).float() + bias).transpose(1, 2), target) for x in inputs]
        torch.testing.assert_close(loss, torch.stack(per_step).mean(), rtol=1e-6, atol=1e-6)
