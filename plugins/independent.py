"""``independent``: a per-position categorical fitted from code counts with additive smoothing.

The floor every table should show: exact NLL, sampling and inpainting, no network (NFE 0).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

import vqbench
from vqbench.config import positive
from vqbench.interfaces import Prior


@dataclass
class IndependentSampler:
    """Sampler settings (overridable per call / per benchmark)."""

    temperature: float = 1.0

    def validate(self, key: str) -> None:
        positive(key, "temperature", self.temperature)


@dataclass
class IndependentConfig(IndependentSampler):
    smoothing: float = 0.5  # pseudo-count added to every (position, code)

    def validate(self, key: str) -> None:
        super().validate(key)
        positive(key, "smoothing", self.smoothing)


class IndependentPrior(Prior):
    """Per-position categorical from smoothed code counts: exact NLL, sampling, inpainting (no network)."""

    Config = IndependentConfig
    sampler_config = IndependentSampler
    trainable = False
    supports_inpainting = True
    supports_likelihood = True

    def __init__(self, config: IndependentConfig, codebook_size: int, latent_shape: tuple[int, int], num_classes: int = 0):
        super().__init__(config, codebook_size, latent_shape, num_classes)
        h, w = self.latent_shape
        self.register_buffer("counts", torch.zeros(h * w, codebook_size, dtype=torch.float64))

    def fit(self, codes: torch.Tensor) -> None:
        """Count every (position, code) of the grids with one bincount: never the B×(h·w)×V one-hot, which holds
        130 GB for 63k grids of 16×16 with 1024 codes."""
        flat = self._flatten(codes)
        if flat.numel() and (int(flat.min()) < 0 or int(flat.max()) >= self.codebook_size):
            raise ValueError(f"codes must lie in [0, {self.codebook_size}), got {int(flat.min())}…{int(flat.max())}")
        n = flat.shape[1]
        cells = (torch.arange(n, device=flat.device) * self.codebook_size + flat).flatten()  # position·V + code
        counts = torch.bincount(cells, minlength=n * self.codebook_size).view(n, self.codebook_size)
        self.counts.copy_(counts.to(self.counts))

    def log_probs(self) -> torch.Tensor:
        """log p(code | position), (h·w)×V in nats."""
        smoothed = self.counts + self.config.smoothing
        return (smoothed / smoothed.sum(dim=1, keepdim=True)).log()

    def _flatten(self, codes: torch.Tensor) -> torch.Tensor:
        if tuple(codes.shape[1:]) != self.latent_shape:
            raise ValueError(f"codes of shape {tuple(codes.shape[1:])} do not match the fitted latent shape {self.latent_shape}")
        return codes.reshape(codes.shape[0], -1).long()

    def loss(self, codes: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.nll(codes).mean()

    def nll(self, codes: torch.Tensor, generator: torch.Generator | None = None, labels: torch.Tensor | None = None) -> torch.Tensor:
        flat = self._flatten(codes)
        logp = self.log_probs().to(flat.device)
        picked = logp.gather(1, flat.t()).t()  # B×N
        return -picked.mean(dim=1).float() / math.log(2.0)

    def _draw(self, n: int, generator: torch.Generator, **opts) -> torch.Tensor:
        temperature = self.sampler(**opts).temperature
        probs = torch.softmax(self.log_probs() / temperature, dim=-1).float().to(generator.device)
        draws = torch.multinomial(probs, n, replacement=True, generator=generator)  # N×n
        self.last_nfe = 0
        return draws.t().reshape(n, *self.latent_shape)

    def sample(self, n, latent_shape, generator, labels=None, **opts) -> torch.Tensor:
        self.check_shape(latent_shape)
        return self._draw(n, generator, **opts)

    def inpaint(self, codes: torch.Tensor, keep_mask: torch.Tensor, generator: torch.Generator, labels=None, **opts) -> torch.Tensor:
        fresh = self._draw(codes.shape[0], generator, **opts).to(codes.device)
        return torch.where(keep_mask.to(codes.device), codes, fresh)


@vqbench.hookimpl
def vqbench_register_priors(registry):
    registry.register("independent", IndependentPrior)


@vqbench.hookimpl
def vqbench_conformance_cases():
    from vqbench.testing import PriorCase  # test-only (needs pytest), so imported here

    return [PriorCase("independent", {"smoothing": 0.5}, nfe=lambda opts: 0)]
