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
    """Per-layer keys and values of the positions decoded so far (for causal sampling).

    Stored in preallocated buffers that double when full, so appending one position costs O(1) copies instead of
    re-concatenating the whole cache."""

    keys: dict[int, torch.Tensor] = field(default_factory=dict)
    values: dict[int, torch.Tensor] = field(default_factory=dict)
    lengths: dict[int, int] = field(default_factory=dict)

    def length(self) -> int:
        return next(iter(self.lengths.values())) if self.lengths else 0

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Add k, v (B×H×t×D) after the cached positions; returns views of all keys and values so far."""
        used, t = self.lengths.get(layer, 0), k.shape[-2]
        if layer not in self.keys or self.keys[layer].shape[-2] < used + t or self.keys[layer].dtype != k.dtype:
            capacity = max(2 * (used + t), 16)
            grown_k = k.new_empty(*k.shape[:-2], capacity, k.shape[-1])
            grown_v = v.new_empty(*v.shape[:-2], capacity, v.shape[-1])
            if used:
                grown_k[..., :used, :] = self.keys[layer][..., :used, :]
                grown_v[..., :used, :] = self.values[layer][..., :used, :]
            self.keys[layer], self.values[layer] = grown_k, grown_v
        self.keys[layer][..., used : used + t, :] = k
        self.values[layer][..., used : used + t, :] = v
        self.lengths[layer] = used + t
        return self.keys[layer][..., : used + t, :], self.values[layer][..., : used + t, :]


class SelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int, dim_head: int, dropout: float = 0.0, causal: bool = False, qkv_bias: bool = False):
        super().__init__()
        self.heads, self.causal, self.dropout = heads, causal, dropout
        self.to_qkv = nn.Linear(dim, 3 * heads * dim_head, bias=qkv_bias)
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
        q, k, v = self.project(x, angles)
        past = 0
        if cache is not None:
            past = cache.lengths.get(layer, 0)
            k, v = cache.append(layer, k, v)
        is_causal = self.causal and q.shape[-2] > 1
        if is_causal and past:
            mask = torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool, device=x.device).tril(past)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self._p())
        else:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=is_causal, dropout_p=self._p())
        return self.to_out(rearrange(out, "b h n d -> b n (h d)"))

    def heads_at(self, x: torch.Tensor, queries: torch.Tensor, angles: torch.Tensor | None = None) -> torch.Tensor:
        """The concatenated heads at the query positions ``queries`` (B×K indices) only, B×K×(heads·dim_head): keys
        and values come from all N positions of ``x`` (no cache); a causal layer masks each query's future."""
        q, k, v = self.project(x, angles)
        q = q.gather(2, queries[:, None, :, None].expand(-1, q.shape[1], -1, q.shape[-1]))
        mask = torch.arange(k.shape[-2], device=x.device) <= queries[:, None, :, None] if self.causal else None
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self._p())
        return rearrange(out, "b h n d -> b n (h d)")

    def project(self, x: torch.Tensor, angles: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Queries, keys and values (B×H×N×D each), q and k rotated when ``angles`` are given."""
        qkv = rearrange(self.to_qkv(x), "b n (three h d) -> three b h n d", three=3, h=self.heads)
        if angles is None:
            q, k, v = qkv.unbind(0)
            return q, k, v
        q, k = apply_rotary(qkv[:2], angles).unbind(0)  # q and k rotated in one pass
        return q, k, qkv[2]

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
        return self.attend(x, self.context_kv(context))

    def context_kv(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values (B×H×M×D each) of ``context``: compute once, attend to them from many decoding steps."""
        k, v = rearrange(self.to_kv(context), "b m (two h d) -> two b h m d", two=2, h=self.heads)
        return k, v

    def attend(self, x: torch.Tensor, kv: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        k, v = kv
        if k.shape[-2] == 1 and not torch.is_grad_enabled() and not (self.training and self.dropout):
            # a softmax over one key is exactly 1: every query gets that key's value (SDPA returns it unchanged),
            # so the query projection and the softmax are skipped and the output projected once per sequence.
            # Inference only, so that no parameter is left without a gradient in training.
            return self.to_out(rearrange(v, "b h n d -> b n (h d)")).expand(-1, x.shape[1], -1)
        q = rearrange(self.to_q(x), "b n (h d) -> b h n d", h=self.heads)
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        return self.to_out(rearrange(out, "b h n d -> b n (h d)"))
