"""One cached decoding step through a stack of ``TransformerBlock``s with plain functional calls.

A token step on a CPU is bound by per-call overhead (one query row per sequence), not arithmetic: this path computes
what the blocks' ``forward`` computes with a ``KVCache`` (same operators, same order) with as few calls as it can —
B×dim rows instead of B×1×dim (a linear layer is one ``addmm``), no module calls or einops parsing, and each layer's
keys and values written with one copy into buffers sized for the whole sequence, allocated once.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import TransformerBlock
from .rotary import apply_rotary


@dataclass
class StaticKVCache:
    """Keys and values of every layer, allocated at the first step: per layer a B×length×2×H×D buffer (a position's
    key and value side by side, as the fused projection lays them out)."""

    length: int
    layers: list[torch.Tensor] = field(default_factory=list)

    def buffers(self, depth: int, like: torch.Tensor) -> list[torch.Tensor]:
        """``like``: B×2×H×D (one layer's new key and value)."""
        if not self.layers or self.layers[0].dtype != like.dtype:
            b, two, h, d = like.shape
            whole = like.new_empty(depth, b, self.length, two, h, d)
            self.layers = list(whole.unbind(0))
        return self.layers


def decode_blocks(blocks: nn.ModuleList, x: torch.Tensor, angles: torch.Tensor | None, cache: StaticKVCache, position: int) -> torch.Tensor:
    """``x``: B×dim, the input of position ``position``; returns the last block's output (B×dim) after storing this
    position's keys and values. Inference only (no dropout)."""
    b, end = x.shape[0], position + 1
    for layer, block in enumerate(blocks):
        assert isinstance(block, TransformerBlock) and not block.training
        attn = block.attn
        h = F.layer_norm(x, block.norm_attn.normalized_shape, block.norm_attn.weight, block.norm_attn.bias, block.norm_attn.eps)
        qkv = F.linear(h, attn.to_qkv.weight, attn.to_qkv.bias).view(b, 3, attn.heads, -1)
        kv_new = qkv[:, 1:]
        if angles is not None:  # rotate q and k in one pass (N = 1 position)
            q, k = apply_rotary(qkv[:, :2, :, None], angles).unbind(1)
            kv_new = torch.stack([k[:, :, 0], qkv[:, 2]], dim=1)
        else:
            q = qkv[:, 0, :, None]
        kv = cache.buffers(len(blocks), kv_new)[layer]
        kv[:, position] = kv_new
        keys, values = kv[:, :end].unbind(2)  # B×end×H×D views, read as B×H×end×D
        out = F.scaled_dot_product_attention(q, keys.transpose(1, 2), values.transpose(1, 2))
        x = x + F.linear(out.view(b, -1), attn.to_out.weight, attn.to_out.bias)
        norm, fc1, fc2 = block.norm_mlp, block.mlp.net[0], block.mlp.net[3]
        assert isinstance(fc1, nn.Linear) and isinstance(fc2, nn.Linear)
        h = F.layer_norm(x, norm.normalized_shape, norm.weight, norm.bias, norm.eps)
        x = x + F.linear(F.gelu(F.linear(h, fc1.weight, fc1.bias)), fc2.weight, fc2.bias)
    return x
