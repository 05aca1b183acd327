"""A third-party-style plugin used by the tests: a trainable per-position table prior and a prior whose loss is NaN.

The table prior runs the shared contract (vqbench/testing.py) in ``tests/test_conformance.py::TestExamplePlugin``,
the way a plugin author runs it on their own prior."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

import vqbench
from vqbench.interfaces import Prior


@dataclass
class TableConfig:
    init_scale: float = 0.0


class TablePrior(Prior):
    """Per-position logits trained by gradient descent (a trainable twin of ``independent``)."""

    Config = TableConfig
    supports_likelihood = True
    supports_inpainting = True

    def __init__(self, config, codebook_size, latent_shape, num_classes=0):
        super().__init__(config, codebook_size, latent_shape, num_classes)
        n = latent_shape[0] * latent_shape[1]
        self.logits = torch.nn.Parameter(torch.randn(n, codebook_size) * config.init_scale)

    def loss(self, codes, labels=None):
        return F.cross_entropy(self.logits.expand(codes.shape[0], -1, -1).transpose(1, 2), codes.flatten(1))

    def nll(self, codes, generator=None, labels=None):
        logp = self.logits.log_softmax(-1)
        return -logp.gather(1, codes.flatten(1).t()).t().mean(1) / math.log(2)

    def sample(self, n, latent_shape, generator, labels=None, **opts):
        self.last_nfe = 1
        probs = self.logits.softmax(-1).to(generator.device)
        return torch.multinomial(probs, n, replacement=True, generator=generator).t().reshape(n, *latent_shape)

    def inpaint(self, codes, keep_mask, generator, labels=None, **opts):
        fresh = self.sample(codes.shape[0], tuple(codes.shape[1:]), generator).to(codes.device)
        return torch.where(keep_mask.to(codes.device), codes, fresh)


class NaNPrior(TablePrior):
    def loss(self, codes, labels=None):
        return super().loss(codes) * float("nan")


@vqbench.hookimpl
def vqbench_register_priors(registry):
    registry.register("table", TablePrior)
    registry.register("nan_prior", NaNPrior)
