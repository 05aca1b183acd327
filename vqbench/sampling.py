"""Sampling helpers shared by priors."""
from __future__ import annotations

import torch


def sample_categorical(logits: torch.Tensor, temperature: float = 1.0, generator: torch.Generator | None = None) -> torch.Tensor:
    """One draw per position from softmax(logits / temperature): logits …×V → int64 codes ….

    Inverse-CDF sampling: a single uniform number per position (``torch.multinomial`` draws one exponential per
    vocabulary entry, which dominates sampling time for large codebooks).
    """
    if temperature == 1.0:
        probs = torch.softmax(logits, dim=-1, dtype=torch.float32)
    else:
        probs = torch.softmax(logits.float().mul_(1.0 / temperature), dim=-1)
    cdf = probs.cumsum_(dim=-1)
    device = generator.device if generator is not None else logits.device
    u = torch.rand((*cdf.shape[:-1], 1), generator=generator, device=device).to(cdf.device) * cdf[..., -1:]
    return torch.searchsorted(cdf, u).squeeze(-1).clamp_(max=cdf.shape[-1] - 1)
