"""Multi-head self-attention through ``scaled_dot_product_attention``, with rotary and a key/value cache."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from .rotary import apply_rotary


@dataclass
class KVCache:
    """Per-layer keys and values of the positions decoded so far (for causal sampling)."""

    keys: dict[int, torch.Tensor] = field(default_factory=dict)
    values: dict[int, torch.Tensor] = field(default_factory=dict)

    def length(self) -> int:
        return next(iter(self.keys.values())).shape[-2] if self.keys else 0

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if layer in self.keys:
            k = torch.cat([self.keys[layer], k], dim=-2)
            v = torch.cat([self.values[layer], v], dim=-2)
        self.keys[layer], self.values[layer] = k, v
        return k, v


class SelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int, dim_head: int, dropout: float = 0.0, causal: bool = False):
        super().__init__()
        self.heads, self.causal, self.dropout = heads, causal, dropout
        self.to_qkv = nn.Linear(dim, 3 * heads * dim_head, bias=False)
        self.to_out = nn.Linear(heads * dim_head, dim)

    def forward(
        self,
        x: torch.Tensor,
        angles: torch.Tensor | None = None,
        cache: KVCache | None = None,
        layer: int = 0,
    ) -> torch.Tensor:
        """``x``: B×N×dim. ``angles``: rotary angles for these N positions. With ``cache``, N new positions are
        appended after the cached ones (causal decoding)."""
        qkv = rearrange(self.to_qkv(x), "b n (three h d) -> three b h n d", three=3, h=self.heads)
        if angles is not None:
            q, k = apply_rotary(qkv[:2], angles).unbind(0)  # q and k rotated in one pass
            v = qkv[2]
        else:
            q, k, v = qkv.unbind(0)
        past = 0
        if cache is not None:
            past = cache.length() if layer in cache.keys else 0
            k, v = cache.append(layer, k, v)
        is_causal = self.causal and q.shape[-2] > 1
        if is_causal and past:
            mask = torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool, device=x.device).tril(past)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self._p())
        else:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=is_causal, dropout_p=self._p())
        return self.to_out(rearrange(out, "b h n d -> b n (h d)"))

    def _p(self) -> float:
        return self.dropout if self.training else 0.0


class CrossAttention(nn.Module):
    """Queries from ``x`` attend to keys/values from ``context`` (no causal mask, no rotary)."""

    def __init__(self, dim: int, heads: int, dim_head: int, dropout: float = 0.0, context_dim: int | None = None):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.to_q = nn.Linear(dim, heads * dim_head, bias=False)
        self.to_kv = nn.Linear(context_dim or dim, 2 * heads * dim_head, bias=False)
        self.to_out = nn.Linear(heads * dim_head, dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        q = rearrange(self.to_q(x), "b n (h d) -> b h n d", h=self.heads)
        k, v = rearrange(self.to_kv(context), "b m (two h d) -> two b h m d", two=2, h=self.heads)
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        return self.to_out(rearrange(out, "b h n d -> b n (h d)"))
