"""Nearest-neighbour vector quantizer (``quantize.embedding.weight`` as in taming-transformers)."""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn


class VectorQuantizer(nn.Module):
    def __init__(self, n_embed: int, embed_dim: int, beta: float = 0.25):
        super().__init__()
        self.n_embed, self.embed_dim, self.beta = n_embed, embed_dim, beta
        self.embedding = nn.Embedding(n_embed, embed_dim)
        nn.init.uniform_(self.embedding.weight, -1.0 / n_embed, 1.0 / n_embed)

    def codes(self, z: torch.Tensor) -> torch.Tensor:
        """Index of the nearest codebook vector for every position of z (B×C×h×w) → LongTensor B×h×w.

        Distances are computed in float32 even under autocast, where the matrix product would otherwise run in bf16
        and pick another code for near ties (and differ from ``encode``, which runs outside autocast)."""
        full = torch.autocast(z.device.type, enabled=False) if torch.amp.is_autocast_available(z.device.type) else contextlib.nullcontext()
        with full:
            flat = rearrange(z, "b c h w -> (b h w) c").float()
            weight = self.embedding.weight.float()
            distances = flat.pow(2).sum(1, keepdim=True) + weight.pow(2).sum(1)[None, :] - 2.0 * flat @ weight.t()
        return distances.argmin(dim=1).view(z.shape[0], z.shape[2], z.shape[3])

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes B×h×w → codebook vectors B×C×h×w."""
        return rearrange(self.embedding(codes), "b h w c -> b c h w")

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Straight-through quantization: (z_q, codebook + β·commitment loss, codes)."""
        codes = self.codes(z)
        z_q = self.lookup(codes)
        loss = F.mse_loss(z_q, z.detach()) + self.beta * F.mse_loss(z, z_q.detach())
        return z + (z_q - z).detach(), loss, codes

    @torch.no_grad()
    def restart_dead_codes(self, usage: torch.Tensor, z: torch.Tensor, generator: torch.Generator) -> int:
        """Re-initialise codes with zero ``usage`` to random encoder outputs from ``z``; returns how many."""
        dead = (usage == 0).nonzero().flatten()
        if dead.numel() == 0:
            return 0
        flat = rearrange(z, "b c h w -> (b h w) c")
        pick = torch.randint(0, flat.shape[0], (dead.numel(),), generator=generator, device="cpu").to(flat.device)
        self.embedding.weight[dead] = flat[pick].to(self.embedding.weight.dtype)
        return int(dead.numel())
