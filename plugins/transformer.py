"""``transformer``: a flat pre-norm transformer over the raster sequence, bidirectional (BERT-style) or causal (GPT)
with a key/value cache; learned absolute positions and/or rotary (1d over the raster index, 2d axial)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

import vqbench
from vqbench.config import positive
from vqbench.errors import ConfigError
from vqbench.interfaces import CausalBackbone
from vqbench.nn import KVCache, StaticKVCache, TransformerBlock, decode_blocks, init_weights, rotary_angles_1d, rotary_angles_2d


@dataclass
class TransformerConfig:
    dim: int = 512
    depth: int = 24
    heads: int = 8
    dim_head: int = 64
    mlp_ratio: float = 4.0
    dropout: float = 0.0
    abs_pos: bool = True
    rotary: Literal["none", "1d", "2d"] = "none"
    rotary_dim: int | None = None
    class_conditional: bool = False
    qkv_bias: bool = False  # biases on the query/key/value projections (minGPT, Unleashing Transformers)
    logits_bias: bool = True  # a bias on the output projection (minGPT's head has none)

    def validate(self, key: str) -> None:
        for name in ("dim", "depth", "heads", "dim_head", "mlp_ratio"):
            positive(key, name, getattr(self, name))
        rot = self.rotary_dim or self.dim_head
        if self.rotary != "none" and (rot > self.dim_head or rot % (4 if self.rotary == "2d" else 2)):
            raise ConfigError(f"{key}.rotary_dim", f"must be ≤ dim_head and divisible by {4 if self.rotary == '2d' else 2}, got {rot}")


# Unleashing Transformers' absorbing/AR network on 16×16 latents with 1024 codes; taming-transformers' FFHQ GPT.
PRESETS = {
    "unleashing": {"dim": 512, "depth": 24, "heads": 8, "dim_head": 64, "abs_pos": True, "qkv_bias": True, "logits_bias": False},
    "taming-ffhq": {"dim": 1664, "depth": 24, "heads": 16, "dim_head": 104, "abs_pos": True, "qkv_bias": True, "logits_bias": False},
}


class Transformer(CausalBackbone):
    """Flat pre-norm transformer (bidirectional, or causal with a key/value cache)."""

    Config = TransformerConfig
    presets = PRESETS

    def __init__(
        self, config: TransformerConfig, vocab_size: int, num_logits: int, latent_shape: tuple[int, int], num_classes: int = 0, causal: bool = False
    ):
        super().__init__()
        self.config, self.causal, self.latent_shape = config, causal, tuple(latent_shape)
        h, w = self.latent_shape
        self.embed = nn.Embedding(vocab_size, config.dim)
        self.pos = nn.Parameter(torch.randn(1, h * w, config.dim) * 0.02) if config.abs_pos else None
        self.class_embed = nn.Embedding(num_classes, config.dim) if config.class_conditional and num_classes else None
        self.blocks = nn.ModuleList(
            TransformerBlock(config.dim, config.heads, config.dim_head, config.mlp_ratio, config.dropout, causal=causal, qkv_bias=config.qkv_bias)
            for _ in range(config.depth)
        )
        self.norm = nn.LayerNorm(config.dim)
        self.to_logits = nn.Linear(config.dim, num_logits, bias=config.logits_bias)
        self.apply(init_weights)  # positions keep their own N(0, 0.02) draw
        self._angles: dict[torch.device, torch.Tensor] = {}

    def angles(self, device: torch.device) -> torch.Tensor | None:
        rot = self.config.rotary_dim or self.config.dim_head
        if self.config.rotary == "none":
            return None
        if device not in self._angles:
            h, w = self.latent_shape
            self._angles[device] = (
                rotary_angles_2d(h, w, rot, device=device)
                if self.config.rotary == "2d"
                else rotary_angles_1d(torch.arange(h * w, device=device), rot)
            )
        return self._angles[device]

    def forward(
        self, codes: torch.Tensor, labels: torch.Tensor | None = None, cache: KVCache | None = None, offset: int = 0, rows: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Logits for positions ``offset … offset+t`` of tokens ``codes`` (B×t). With ``cache`` (causal only), the
        keys/values of earlier positions are reused and these are appended. With ``rows`` (B×t bool, no cache), only
        those positions' logits (K×V): the last block's queries, projection and feed-forward, and the head, skip
        the others."""
        if rows is not None and cache is not None:
            raise ValueError("transformer: rows (a subset of positions' logits) cannot be combined with a key/value cache")
        t = codes.shape[1]
        x = self.embed(codes)
        if self.pos is not None:
            x = x + self.pos[:, offset : offset + t]
        if self.class_embed is not None and labels is not None:
            x = x + self.class_embed(labels)[:, None]
        angles = self.angles(codes.device)
        angles = angles[offset : offset + t] if angles is not None else None
        last = len(self.blocks) - 1 if rows is not None else len(self.blocks)
        for i, block in enumerate(self.blocks[:last]):
            x = block(x, angles, cache, i)
        if rows is not None:
            x = self.blocks[last].forward_rows(x, rows, angles) if last >= 0 else x[rows]
        return self.to_logits(self.norm(x))

    def logits_at(self, codes: torch.Tensor, rows: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self(codes, labels, rows=rows)

    def decode_step(self, token: torch.Tensor, position: int, cache: StaticKVCache, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Logits B×V of position ``position`` from its input token (B×1), reusing the cached keys/values of the
        earlier positions (causal, inference): the same numbers as ``forward`` with a ``KVCache``, fewer calls."""
        x = F.embedding(token[:, 0], self.embed.weight)
        if self.pos is not None:
            x = x + self.pos[0, position]
        if self.class_embed is not None and labels is not None:
            x = x + F.embedding(labels, self.class_embed.weight)
        angles = self.angles(token.device)
        x = decode_blocks(self.blocks, x, angles[position : position + 1] if angles is not None else None, cache, position)
        x = F.layer_norm(x, self.norm.normalized_shape, self.norm.weight, self.norm.bias, self.norm.eps)
        return F.linear(x, self.to_logits.weight, self.to_logits.bias)


@vqbench.hookimpl
def vqbench_register_backbones(registry):
    registry.register("transformer", Transformer)


@vqbench.hookimpl
def vqbench_conformance_cases():
    from vqbench.testing import TRANSFORMER, BackboneCase  # test-only (needs pytest), so imported here

    return [
        BackboneCase(dict(TRANSFORMER), id="transformer-bidirectional"),
        BackboneCase({**TRANSFORMER, "rotary": "1d"}, causal=True, id="transformer-causal"),
    ]
