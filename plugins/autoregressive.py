"""``autoregressive``: a causal transformer over the raster order with a start token (taming-transformers' GPT).

Exact NLL; sampling one position per network evaluation with a key/value cache (O(N) work per step) or, with
``kv_cache: false``, recomputing the whole prefix each step as the Unleashing AR baseline does. Inpainting walks the
raster order: kept tokens are fed as given, masked ones are sampled from what precedes them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

import vqbench
from vqbench.backbones import build_backbone, parse_backbone
from vqbench.config import positive
from vqbench.errors import ConfigError
from vqbench.interfaces import Prior
from vqbench.nn import StaticKVCache
from vqbench.sampling import raster_decode

DEFAULT_BACKBONE = {"name": "transformer", "dim": 256, "depth": 8, "heads": 8, "dim_head": 32}


@dataclass
class ARSampler:
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    kv_cache: bool = True

    def validate(self, key: str) -> None:
        positive(key, "temperature", self.temperature)
        positive(key, "top_k", self.top_k)
        if self.top_p is not None and not 0.0 < self.top_p <= 1.0:
            raise ConfigError(f"{key}.top_p", f"must lie in (0, 1] (the nucleus keeps at least the top token), got {self.top_p!r}")


@dataclass
class ARConfig(ARSampler):
    backbone: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_BACKBONE))
    class_token: bool = False  # class-conditional: the label is the first input token (taming's GPT) instead of a start token

    def validate(self, key: str) -> None:
        super().validate(key)
        parse_backbone(self.backbone, f"{key}.backbone", "transformer")


class AutoregressivePrior(Prior):
    """Raster-order GPT with a start token: exact likelihood, KV-cache sampling, causal inpainting."""

    Config = ARConfig
    sampler_config = ARSampler
    supports_inpainting = True
    supports_likelihood = True

    def __init__(self, config: ARConfig, codebook_size: int, latent_shape: tuple[int, int], num_classes: int = 0):
        super().__init__(config, codebook_size, latent_shape, num_classes)
        self.start_token = codebook_size  # with ``class_token``: class c is token codebook_size + c
        self.class_tokens = num_classes if config.class_token else 0
        self.net = build_backbone(
            config.backbone,
            "backbone",
            "transformer",
            codebook_size + max(1, self.class_tokens),
            codebook_size,
            latent_shape,
            num_classes,
            causal=True,
        )

    def _start(self, batch: int, labels: torch.Tensor | None, device: torch.device) -> int | torch.Tensor:
        """The first input token: the start token, or each row's class token."""
        if not self.class_tokens:
            return self.start_token
        if labels is None:
            raise ValueError("this prior is class-conditional through its first token (class_token: true); pass labels")
        return self.start_token + labels.to(device).view(batch)

    def _inputs(self, x: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        first = torch.empty_like(x[:, :1])
        first[:, 0] = self._start(x.shape[0], labels, x.device)
        return torch.cat([first, x[:, :-1]], dim=1)

    def loss(self, codes: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        x = codes.flatten(1)
        return F.cross_entropy(self.net(self._inputs(x, labels), labels).float().transpose(1, 2), x)

    def nll(self, codes: torch.Tensor, generator: torch.Generator | None = None, labels: torch.Tensor | None = None) -> torch.Tensor:
        x = codes.flatten(1)
        ce = F.cross_entropy(self.net(self._inputs(x, labels), labels).float().transpose(1, 2), x, reduction="none")
        return ce.mean(dim=1) / math.log(2)

    def sample(self, n, latent_shape, generator, labels=None, **opts) -> torch.Tensor:
        self.check_shape(latent_shape)
        return self.generate(n, generator, labels, **opts).view(n, *self.latent_shape)

    def inpaint(self, codes, keep_mask, generator, labels=None, **opts) -> torch.Tensor:
        out = self.generate(codes.shape[0], generator, labels, given=codes.flatten(1), keep=keep_mask.flatten(1).to(codes.device), **opts)
        return out.view_as(codes)

    @torch.no_grad()
    def generate(self, n: int, generator: torch.Generator, labels=None, given=None, keep=None, **opts) -> torch.Tensor:
        """Sample n sequences position by position; where ``keep`` is True the ``given`` token is used instead."""
        cfg = self.sampler(**opts)
        device = self.net.to_logits.weight.device
        length = self.latent_shape[0] * self.latent_shape[1]
        cache = StaticKVCache(length) if cfg.kv_cache else None
        labels = labels.to(device) if labels is not None else None

        def next_logits(tokens: torch.Tensor, i: int) -> torch.Tensor:
            if cache is not None:
                return self.net.decode_step(tokens[:, i : i + 1], i, cache, labels)
            return self.net(tokens[:, : i + 1], labels)[:, -1]

        start = self._start(n, labels, device)
        out = raster_decode(next_logits, n, length, start, generator, device, cfg.temperature, cfg.top_k, cfg.top_p, given, keep)
        self.last_nfe = length
        return out


@vqbench.hookimpl
def vqbench_register_priors(registry):
    registry.register("autoregressive", AutoregressivePrior)


@vqbench.hookimpl
def vqbench_conformance_cases():
    from vqbench.testing import SHAPE, TRANSFORMER, PriorCase  # test-only (needs pytest), so imported here

    minigpt = {**TRANSFORMER, "class_conditional": False, "qkv_bias": True, "logits_bias": False}
    return [
        PriorCase("autoregressive", {"backbone": TRANSFORMER}, conditional=True, nfe=lambda opts: SHAPE[0] * SHAPE[1]),
        PriorCase(
            "autoregressive",
            {"backbone": minigpt, "class_token": True},
            conditional=True,
            nfe=lambda opts: SHAPE[0] * SHAPE[1],
            id="autoregressive-class-token",
        ),
    ]
