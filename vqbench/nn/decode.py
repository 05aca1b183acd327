"""One cached decoding step through a stack of ``TransformerBlock``s with plain functional calls.

A token step on a CPU is bound by per-call overhead (one query row per sequence), not arithmetic: this path computes
exactly what the blocks' ``forward`` computes with a ``KVCache`` (same operators, same order, same numbers) without
module calls, einops parsing or cache growth, writing keys and values into buffers sized for the whole sequence.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import TransformerBlock
from .rotary import apply_rotary


@dataclass
class StaticKVCache:
    """Keys and values of every layer (depth×B×H×length×D each), allocated once at the first step."""

    length: int
    keys: torch.Tensor | None = None
    values: torch.Tensor | None = None

    def buffers(self, depth: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``like``: B×H×1×D (one layer's new keys)."""
        if self.keys is None or self.keys.dtype != like.dtype:
            b, h, _, d = like.shape
            self.keys = like.new_empty(depth, b, h, self.length, d)
            self.values = like.new_empty(depth, b, h, self.length, d)
        assert self.values is not None
        return self.keys, self.values


def decode_blocks(blocks: nn.ModuleList, x: torch.Tensor, angles: torch.Tensor | None, cache: StaticKVCache, position: int) -> torch.Tensor:
    """``x``: B×1×dim, the input of position ``position``; returns the last block's output (B×1×dim) after storing
    this position's keys and values. Inference only (no dropout)."""
    b = x.shape[0]
    for layer, block in enumerate(blocks):
        assert isinstance(block, TransformerBlock) and not block.training
        attn = block.attn
        h = F.layer_norm(x, block.norm_attn.normalized_shape, block.norm_attn.weight, block.norm_attn.bias, block.norm_attn.eps)
        qkv = F.linear(h, attn.to_qkv.weight, attn.to_qkv.bias).view(b, 1, 3, attn.heads, -1).permute(2, 0, 3, 1, 4)
        if angles is not None:
            q, k = apply_rotary(qkv[:2], angles).unbind(0)
        else:
            q, k = qkv[0], qkv[1]
        keys, values = cache.buffers(len(blocks), k)
        keys[layer, :, :, position] = k[:, :, 0]
        values[layer, :, :, position] = qkv[2, :, :, 0]
        end = position + 1
        out = F.scaled_dot_product_attention(q, keys[layer, :, :, :end], values[layer, :, :, :end])
        x = x + F.linear(out.transpose(1, 2).reshape(b, 1, -1), attn.to_out.weight, attn.to_out.bias)
        norm, fc1, fc2 = block.norm_mlp, block.mlp.net[0], block.mlp.net[3]
        assert isinstance(fc1, nn.Linear) and isinstance(fc2, nn.Linear)
        h = F.layer_norm(x, norm.normalized_shape, norm.weight, norm.bias, norm.eps)
        x = x + F.linear(F.gelu(F.linear(h, fc1.weight, fc1.bias)), fc2.weight, fc2.bias)
    return x
