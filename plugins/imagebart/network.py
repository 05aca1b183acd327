"""ImageBART's reverse model for one scale s < n: a bidirectional encoder over [scale token, x_s] and a causal
decoder over [start, x_{s−1}[:−1]] that cross-attends to the encoder (no weight sharing across scales, as in the
paper; with ``num_scales`` one network serves every scale, told which by a learned scale embedding)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from vqbench.config import positive
from vqbench.nn import DecoderBlock, KVCache, TransformerBlock, init_weights


@dataclass
class EncoderDecoderConfig:
    dim: int = 128
    encoder_depth: int = 2
    decoder_depth: int = 2
    heads: int = 4
    dim_head: int = 32
    mlp_ratio: float = 4.0
    dropout: float = 0.0

    def validate(self, key: str) -> None:
        for name in ("dim", "encoder_depth", "decoder_depth", "heads", "dim_head", "mlp_ratio"):
            positive(key, name, getattr(self, name))


class EncoderDecoder(nn.Module):
    """p_s(x_{s−1} | x_s) for one scale: logits B×N×K for every position of x_{s−1}, given x_s and the x_{s−1} prefix.

    With ``residual_logits`` (the reference's residual-scaled variant) the output is
    exp(λ)·f + log(α_s·e(x_s) + (1 − α_s)/K): the network learns a correction to the forward step's likelihood.

    ``num_scales`` > 0 makes it one network shared across that many scales: ``scale`` (0-based) selects a learned
    embedding added to the scale token and to every decoder input, and the scale's own λ."""

    def __init__(
        self, config: EncoderDecoderConfig, num_codes: int, length: int, residual_logits: bool = False, num_classes: int = 0, num_scales: int = 0
    ):
        super().__init__()
        self.config, self.num_codes, self.length = config, num_codes, length
        d = config.dim
        self.encoder_embed = nn.Embedding(num_codes, d)
        self.scale_token = nn.Parameter(torch.randn(1, 1, d) * 0.02)
        self.class_embed = nn.Embedding(num_classes, d) if num_classes else None  # added to the scale token and decoder
        self.encoder_pos = nn.Parameter(torch.randn(1, length + 1, d) * 0.02)
        self.encoder = nn.ModuleList(
            TransformerBlock(d, config.heads, config.dim_head, config.mlp_ratio, config.dropout) for _ in range(config.encoder_depth)
        )
        self.encoder_norm = nn.LayerNorm(d)
        self.start_token = num_codes
        self.decoder_embed = nn.Embedding(num_codes + 1, d)  # codes + start
        self.decoder_pos = nn.Parameter(torch.randn(1, length, d) * 0.02)
        self.decoder = nn.ModuleList(
            DecoderBlock(d, config.heads, config.dim_head, config.mlp_ratio, config.dropout) for _ in range(config.decoder_depth)
        )
        self.decoder_norm = nn.LayerNorm(d)
        self.to_logits = nn.Linear(d, num_codes)
        self.log_scale = nn.Parameter(torch.zeros(num_scales) if num_scales else torch.zeros(())) if residual_logits else None
        self.scale_embed = nn.Embedding(num_scales, d) if num_scales else None  # shared across scales: which one
        self.apply(init_weights)  # scale token and positions keep their own N(0, 0.02) draws

    def _scale(self, scale: int | None) -> torch.Tensor | None:
        """The learned embedding of ``scale`` (1×1×d) for a shared network, else None."""
        if self.scale_embed is None:
            return None
        if scale is None:
            raise ValueError("a network shared across scales needs the scale index")
        return self.scale_embed.weight[scale].view(1, 1, -1)

    def encode(self, x_s: torch.Tensor, labels: torch.Tensor | None = None, scale: int | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The encoder pass over [scale token, x_s] (B×N), as each decoder layer's cross-attention keys/values."""
        first = self.scale_token.expand(len(x_s), -1, -1)
        embedded = self._scale(scale)
        if embedded is not None:
            first = first + embedded
        if self.class_embed is not None and labels is not None:
            first = first + self.class_embed(labels)[:, None]
        h = torch.cat([first, self.encoder_embed(x_s)], dim=1) + self.encoder_pos
        for block in self.encoder:
            h = block(h)
        h = self.encoder_norm(h)
        return [block.memory_kv(h) for block in self.decoder]

    def decode(
        self,
        inputs: torch.Tensor,
        memory: list[tuple[torch.Tensor, torch.Tensor]],
        cache: KVCache | None = None,
        offset: int = 0,
        labels: torch.Tensor | None = None,
        scale: int | None = None,
    ) -> torch.Tensor:
        """Raw logits f for positions ``offset … offset+t`` of decoder ``inputs`` (B×t: start, then x_{s−1} tokens)."""
        t = inputs.shape[1]
        h = self.decoder_embed(inputs) + self.decoder_pos[:, offset : offset + t]
        embedded = self._scale(scale)
        if embedded is not None:
            h = h + embedded
        if self.class_embed is not None and labels is not None:
            h = h + self.class_embed(labels)[:, None]
        for i, block in enumerate(self.decoder):
            h = block(h, memory[i], cache, i)
        return self.to_logits(self.decoder_norm(h))

    def shift(self, x_prev: torch.Tensor) -> torch.Tensor:
        """[start, x_{s−1}[:−1]]: the teacher-forced decoder input."""
        return torch.cat([torch.full_like(x_prev[:, :1], self.start_token), x_prev[:, :-1]], dim=1)

    def residual(self, logits: torch.Tensor, transition_log_probs: torch.Tensor | None, scale: int | None = None) -> torch.Tensor:
        """Apply the residual scaling (a no-op without ``residual_logits``)."""
        if self.log_scale is None or transition_log_probs is None:
            return logits
        log_scale = self.log_scale[scale] if self.log_scale.ndim and scale is not None else self.log_scale
        return log_scale.exp() * logits.float() + transition_log_probs

    def forward(
        self,
        x_s: torch.Tensor,
        x_prev: torch.Tensor,
        transition_log_probs: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        scale: int | None = None,
    ) -> torch.Tensor:
        """Teacher-forced logits B×N×K of x_{s−1} given x_s (``scale``: 0-based, for a network shared across scales)."""
        memory = self.encode(x_s, labels, scale)
        return self.residual(self.decode(self.shift(x_prev), memory, labels=labels, scale=scale), transition_log_probs, scale)
