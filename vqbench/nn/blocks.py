"""Pre-norm transformer blocks: self-attention, cross-attention, and encoder–decoder (decoder) blocks."""

from __future__ import annotations

import torch
from torch import nn

from .attention import CrossAttention, KVCache, SelfAttention
from .mlp import FeedForward


class TransformerBlock(nn.Module):
    """x + attn(norm(x)); x + mlp(norm(x))."""

    def __init__(
        self, dim: int, heads: int, dim_head: int, mlp_ratio: float = 4.0, dropout: float = 0.0, causal: bool = False, qkv_bias: bool = False
    ):
        super().__init__()
        self.norm_attn = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, heads, dim_head, dropout=dropout, causal=causal, qkv_bias=qkv_bias)
        self.norm_mlp = nn.LayerNorm(dim)
        self.mlp = FeedForward(dim, mlp_ratio, dropout)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, angles: torch.Tensor | None = None, cache: KVCache | None = None, layer: int = 0) -> torch.Tensor:
        x = x + self.drop(self.attn(self.norm_attn(x), angles, cache, layer))
        return x + self.drop(self.mlp(self.norm_mlp(x)))

    def forward_rows(self, x: torch.Tensor, rows: torch.Tensor, angles: torch.Tensor | None = None) -> torch.Tensor:
        """``forward(x, angles)[rows]`` (K×dim for a B×N boolean ``rows``) with less work: keys and values still come
        from every position, but the queries, the output projection and the feed-forward are those of the K rows."""
        counts = rows.sum(dim=1)
        most = int(counts.max())  # the one device-to-host sync
        # per sequence its selected positions first, in order (padded with unselected ones up to ``most``)
        queries = torch.sort(rows.to(torch.uint8), dim=1, descending=True, stable=True).indices[:, :most]
        used = torch.arange(most, device=rows.device) < counts[:, None]
        heads = self.attn.heads_at(self.norm_attn(x), queries, angles)[used]
        y = x.gather(1, queries[..., None].expand(-1, -1, x.shape[-1]))[used] + self.drop(self.attn.to_out(heads))
        return y + self.drop(self.mlp(self.norm_mlp(y)))


class CrossBlock(nn.Module):
    """x + cross_attn(norm(x), norm(context)); x + mlp(norm(x))."""

    def __init__(self, dim: int, heads: int, dim_head: int, mlp_ratio: float = 4.0, dropout: float = 0.0):
        super().__init__()
        self.norm_q, self.norm_context = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = CrossAttention(dim, heads, dim_head, dropout=dropout)
        self.norm_mlp = nn.LayerNorm(dim)
        self.mlp = FeedForward(dim, mlp_ratio, dropout)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        x = x + self.drop(self.attn(self.norm_q(x), self.norm_context(context)))
        return x + self.drop(self.mlp(self.norm_mlp(x)))


class DecoderBlock(nn.Module):
    """Encoder–decoder layer: x + causal_self_attn(norm(x)) (key/value cache); x + cross_attn(norm(x), memory);
    x + mlp(norm(x)). ``memory`` is the encoder output's keys/values from ``memory_kv``, computed once per sequence."""

    def __init__(self, dim: int, heads: int, dim_head: int, mlp_ratio: float = 4.0, dropout: float = 0.0):
        super().__init__()
        self.norm_self = nn.LayerNorm(dim)
        self.self_attn = SelfAttention(dim, heads, dim_head, dropout=dropout, causal=True)
        self.norm_cross = nn.LayerNorm(dim)
        self.cross_attn = CrossAttention(dim, heads, dim_head, dropout=dropout)
        self.norm_mlp = nn.LayerNorm(dim)
        self.mlp = FeedForward(dim, mlp_ratio, dropout)
        self.drop = nn.Dropout(dropout)

    def memory_kv(self, encoded: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.cross_attn.context_kv(encoded)

    def forward(self, x: torch.Tensor, memory: tuple[torch.Tensor, torch.Tensor], cache: KVCache | None = None, layer: int = 0) -> torch.Tensor:
        x = x + self.drop(self.self_attn(self.norm_self(x), None, cache, layer))
        x = x + self.drop(self.cross_attn.attend(self.norm_cross(x), memory))
        return x + self.drop(self.mlp(self.norm_mlp(x)))
