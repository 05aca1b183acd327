"""``sundae``: step-unrolled denoising autoencoder over code grids (megapixel SUNDAE).

Training corrupts each grid with a per-sample rate t ~ U[0,1] (each token replaced by a uniform random code with
probability t), then unrolls ``unroll_steps`` denoising passes, each sampled at temperature 1 without gradient; the
loss is the mean cross-entropy of every pass's logits against the clean codes. Sampling starts from uniform codes and
denoises with annealed temperature and update proportion; unchanged samples freeze early and leave the batch.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

import vqbench
from vqbench.backbones import build_backbone, parse_backbone
from vqbench.config import positive
from vqbench.errors import ConfigError
from vqbench.interfaces import Prior
from vqbench.sampling import sample_categorical

SHORT_RUN = 20  # SUNDAE: below this many steps every token takes the new sample


@dataclass
class SundaeSampler:
    """Sampler settings (defaults from the prior's config; overridable per call / per benchmark)."""

    steps: int = 100
    temperature: float = 1.0
    end_temperature: float | None = None  # linear anneal from temperature (None: constant)
    update_proportion: float | None = None  # fraction of positions that take the new sample; None: 0.5 (1.0 below 20 steps)
    end_update_proportion: float | None = None  # linear anneal target (None: constant)
    early_stop: bool = True
    min_steps: int = 10  # a sample unchanged after this many steps is frozen and leaves the batch

    def validate(self, key: str) -> None:
        positive(key, "steps", self.steps)
        positive(key, "temperature", self.temperature)
        positive(key, "end_temperature", self.end_temperature)
        positive(key, "min_steps", self.min_steps, allow_zero=True)
        for name in ("update_proportion", "end_update_proportion"):
            value = getattr(self, name)
            if value is not None and not 0.0 < value <= 1.0:
                raise ConfigError(f"{key}.{name}", f"must lie in (0, 1], got {value}")

    def full_updates(self, explicit: bool) -> bool:
        """The paper's rule: below 20 steps every token updates, unless a proportion was given for this call."""
        return self.steps < SHORT_RUN and not explicit

    def schedules(self, explicit: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """(temperature, update proportion) per step. ``explicit``: the proportions were given for this call (else
        the configured ones are replaced by 1.0 below 20 steps)."""
        end_t = self.end_temperature if self.end_temperature is not None else self.temperature
        temperatures = torch.linspace(self.temperature, end_t, self.steps)
        if self.full_updates(explicit) or (self.update_proportion is None and self.steps < SHORT_RUN):
            return temperatures, torch.ones(self.steps)
        start_p = self.update_proportion if self.update_proportion is not None else 0.5
        end_p = self.end_update_proportion if self.end_update_proportion is not None else start_p
        return temperatures, torch.linspace(start_p, end_p, self.steps)


@dataclass
class SundaeConfig(SundaeSampler):
    backbone: dict[str, Any] = field(default_factory=lambda: {"name": "hourglass"})
    unroll_steps: int = 2

    def validate(self, key: str) -> None:
        super().validate(key)
        positive(key, "unroll_steps", self.unroll_steps)
        parse_backbone(self.backbone, f"{key}.backbone", "hourglass")


class SundaePrior(Prior):
    """SUNDAE: unrolled denoising training; sampling from uniform noise with annealing, partial updates, early stop."""

    Config = SundaeConfig
    sampler_config = SundaeSampler
    supports_inpainting = True

    def __init__(self, config: SundaeConfig, codebook_size: int, latent_shape: tuple[int, int], num_classes: int = 0):
        super().__init__(config, codebook_size, latent_shape, num_classes)
        self.net = build_backbone(config.backbone, "backbone", "hourglass", codebook_size, codebook_size, latent_shape, num_classes)

    def corrupt(self, codes: torch.Tensor) -> torch.Tensor:
        """Replace each token by a uniform random code with a per-sample probability t ~ U[0, 1]."""
        rate = torch.rand(codes.shape[0], 1, device=codes.device)
        noise = torch.randint_like(codes, self.codebook_size)
        return torch.where(torch.rand(codes.shape, device=codes.device) < rate, noise, codes)

    def loss(self, codes: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        target = codes.flatten(1)
        x = self.corrupt(target)
        total = codes.new_zeros((), dtype=torch.float32)
        for step in range(self.config.unroll_steps):
            logits = self.net(x, labels)
            total = total + F.cross_entropy(logits.float().transpose(1, 2), target)
            if step + 1 < self.config.unroll_steps:
                with torch.no_grad():
                    x = sample_categorical(logits.detach(), 1.0)
        return total / self.config.unroll_steps

    def sample(self, n, latent_shape, generator, labels=None, **opts) -> torch.Tensor:
        self.check_shape(latent_shape)
        size = (n, self.latent_shape[0] * self.latent_shape[1])
        x = torch.randint(self.codebook_size, size, generator=generator, device=generator.device).to(self.device)  # on the network's device
        return self.denoise(x, generator, labels=labels, **opts).view(n, *self.latent_shape)

    def inpaint(self, codes: torch.Tensor, keep_mask: torch.Tensor, generator: torch.Generator, labels=None, **opts) -> torch.Tensor:
        """Kept tokens are fixed at their codes on every step; the others start uniform random."""
        keep = keep_mask.flatten(1).to(codes.device)
        given = codes.flatten(1)
        noise = torch.randint(self.codebook_size, given.shape, generator=generator, device=generator.device).to(codes.device)
        x = torch.where(keep, given, noise)
        return self.denoise(x, generator, labels=labels, keep=keep, **opts).view_as(codes)

    @torch.no_grad()
    def denoise(self, x: torch.Tensor, generator: torch.Generator, labels=None, keep: torch.Tensor | None = None, **opts) -> torch.Tensor:
        """Iterative denoising of x (B×N). Frozen samples leave the batch, so compute shrinks as they converge."""
        cfg = self.sampler(**opts)
        explicit = "update_proportion" in opts or "end_update_proportion" in opts
        partial = {cfg.update_proportion, cfg.end_update_proportion} - {None, 1.0}
        if cfg.full_updates(explicit) and partial and not getattr(self, "_warned_short_run", False):
            self._warned_short_run = True
            warnings.warn(
                f"sundae: {cfg.steps} steps < {SHORT_RUN}: every token updates (the paper's rule); the configured update "
                "proportion is ignored — pass update_proportion for the call (priors[].sampling) to force it",
                stacklevel=2,
            )
        temperatures, proportions = cfg.schedules(explicit)
        out = x.clone()
        active = torch.arange(x.shape[0], device=x.device)
        current, given = x, x
        evaluations = 0
        for step in range(cfg.steps):
            logits = self.net(current, labels[active] if labels is not None else None)
            evaluations += len(active)
            proposal = sample_categorical(logits, float(temperatures[step]), generator).to(current.device)
            if proportions[step] < 1.0:
                update = torch.rand(current.shape, generator=generator, device=generator.device).to(current.device) < proportions[step]
                proposal = torch.where(update, proposal, current)
            if keep is not None:
                proposal = torch.where(keep[active], given[active], proposal)
            changed = (proposal != current).any(dim=1)
            current = proposal
            if cfg.early_stop and step + 1 >= cfg.min_steps and not changed.all():
                out[active[~changed]] = current[~changed]
                active, current = active[changed], current[changed]
                if len(active) == 0:
                    break
        out[active] = current
        self.last_nfe = evaluations / x.shape[0]
        return out


@vqbench.hookimpl
def vqbench_register_priors(registry):
    registry.register("sundae", SundaePrior)


@vqbench.hookimpl
def vqbench_conformance_cases():
    from vqbench.testing import HOURGLASS, PriorCase  # test-only (needs pytest), so imported here

    return [
        PriorCase(
            "sundae",
            {"backbone": HOURGLASS, "steps": 6, "min_steps": 2},
            conditional=True,
            nfe=lambda opts: opts["steps"],
            nfe_opts={"steps": 5, "early_stop": False},
        )
    ]
