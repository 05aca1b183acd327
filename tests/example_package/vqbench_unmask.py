"""``unmask``: a masked-token prior on a shared vqbench backbone (an example plugin, docs/writing-a-plugin.md)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

import vqbench
from vqbench.backbones import build_backbone, parse_backbone
from vqbench.config import positive
from vqbench.interfaces import Prior
from vqbench.sampling import sample_categorical

DEFAULT_BACKBONE = {"name": "transformer", "dim": 256, "depth": 8, "heads": 8, "dim_head": 32}


@dataclass
class UnmaskSampler:
    """Sampler settings: a benchmark may change them per call (``priors[].sampling``) without retraining."""

    steps: int = 8  # network evaluations per sample; each unmasks an equal share of the masked positions
    temperature: float = 1.0

    def validate(self, key: str) -> None:
        positive(key, "steps", self.steps)
        positive(key, "temperature", self.temperature)


@dataclass
class UnmaskConfig(UnmaskSampler):
    backbone: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_BACKBONE))  # any registered backbone

    def validate(self, key: str) -> None:
        super().validate(key)
        parse_backbone(self.backbone, f"{key}.backbone", "transformer")  # a typo fails before any training


class UnmaskPrior(Prior):
    """Masked-token prediction on a bidirectional backbone, sampled by unmasking random positions in ``steps`` steps.

    Training hides a random number of each grid's positions behind a mask token and scores the network's guesses for
    them. Sampling starts from a fully masked grid; inpainting starts from the kept tokens. No tractable likelihood."""

    Config = UnmaskConfig
    sampler_config = UnmaskSampler
    supports_inpainting = True

    def __init__(self, config: UnmaskConfig, codebook_size: int, latent_shape: tuple[int, int], num_classes: int = 0):
        super().__init__(config, codebook_size, latent_shape, num_classes)
        self.mask_token = codebook_size  # one input token more than there are codes
        self.net = build_backbone(config.backbone, "backbone", "transformer", codebook_size + 1, codebook_size, latent_shape, num_classes)

    def loss(self, codes: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        x = codes.flatten(1)
        b, n = x.shape
        rank = torch.rand(b, n, device=x.device).argsort(1).argsort(1)  # a random order of the positions
        masked = rank < torch.randint(1, n + 1, (b, 1), device=x.device)  # the first k of it, k uniform in 1..n
        logits = self.net(torch.where(masked, self.mask_token, x), labels)
        return F.cross_entropy(logits[masked].float(), x[masked])

    def sample(self, n, latent_shape, generator, labels=None, **opts) -> torch.Tensor:
        self.check_shape(latent_shape)
        tokens = torch.full((n, latent_shape[0] * latent_shape[1]), self.mask_token, device=self.device)
        return self.unmask(tokens, generator, labels, **opts).view(n, *latent_shape)

    def inpaint(self, codes, keep_mask, generator, labels=None, **opts) -> torch.Tensor:
        tokens = torch.where(keep_mask.to(codes.device), codes, self.mask_token).flatten(1).to(self.device)
        return self.unmask(tokens, generator, labels, **opts).view_as(codes).to(codes.device)

    @torch.no_grad()
    def unmask(self, tokens: torch.Tensor, generator: torch.Generator, labels=None, **opts) -> torch.Tensor:
        """Replace every mask token of ``tokens`` (B×N) by a sampled code, in random order, over ``steps`` steps."""
        cfg = self.sampler(**opts)  # the config's sampler fields with this call's overrides, validated
        masked = tokens == self.mask_token
        noise = torch.rand(tokens.shape, generator=generator, device=generator.device).to(tokens.device)
        order = torch.where(masked, noise, 2.0).argsort(1).argsort(1)  # masked positions first, in random order
        todo = masked.sum(1, keepdim=True)
        for step in range(cfg.steps):
            draws = sample_categorical(self.net(tokens, labels), cfg.temperature, generator).to(tokens.device)
            reveal = (tokens == self.mask_token) & (order < todo * (step + 1) // cfg.steps)
            tokens = torch.where(reveal, draws, tokens)
        self.last_nfe = cfg.steps  # network evaluations per sample, reported next to sample quality
        return tokens


@vqbench.hookimpl
def vqbench_register_priors(registry):
    registry.register("unmask", UnmaskPrior)


@vqbench.hookimpl
def vqbench_conformance_cases():
    from vqbench.testing import TRANSFORMER, PriorCase  # imported here: vqbench.testing needs pytest

    return [
        PriorCase(
            "unmask",
            {"backbone": TRANSFORMER, "steps": 4},  # a 2-layer, 32-wide class-conditional transformer
            conditional=True,  # the loss and the samples must change with the class labels
            nfe=lambda opts: opts["steps"],  # expected last_nfe of sample(**nfe_opts)
            nfe_opts={"steps": 3},
            commits=True,  # a placed token never changes again
        )
    ]
