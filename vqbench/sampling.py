"""Sampling helpers shared by priors."""

from __future__ import annotations

from collections.abc import Callable

import torch


def sample_categorical(logits: torch.Tensor, temperature: float = 1.0, generator: torch.Generator | None = None) -> torch.Tensor:
    """One draw per position from softmax(logits / temperature): logits …×V → int64 codes ….

    Inverse-CDF sampling: a single uniform number per position (``torch.multinomial`` draws one exponential per
    vocabulary entry, which dominates sampling time for large codebooks).
    """
    if temperature == 1.0:
        probs = torch.softmax(logits, dim=-1, dtype=torch.float32)
    else:
        probs = torch.softmax(logits.float() / temperature, dim=-1)  # never in place: the caller's logits stay
    cdf = probs.cumsum_(dim=-1)
    device = generator.device if generator is not None else logits.device
    # u in (0, total]: the first index whose cdf reaches u has positive probability (a draw of exactly 0 would
    # otherwise pick a leading zero-probability index); (1 − r)·total never exceeds total, so no index past V−1.
    r = torch.rand((*cdf.shape[:-1], 1), generator=generator, device=device).to(cdf.device)
    u = (1.0 - r) * cdf[..., -1:]
    return torch.searchsorted(cdf, u).squeeze(-1).clamp_(max=cdf.shape[-1] - 1)


def filter_logits(logits: torch.Tensor, top_k: int | None = None, top_p: float | None = None) -> torch.Tensor:
    """Keep the ``top_k`` largest logits and/or the smallest set whose probability reaches ``top_p`` (nucleus);
    the rest become -inf. Logits …×V."""
    if top_k is not None and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        cumulative = torch.softmax(sorted_logits.float(), dim=-1).cumsum(dim=-1)
        drop_sorted = cumulative - torch.softmax(sorted_logits.float(), dim=-1) >= top_p  # keep the first past top_p
        drop_sorted[..., 0] = False  # the most likely token always stays (top_p → 0 is greedy)
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def gumbel_noise(shape: torch.Size | tuple[int, ...], generator: torch.Generator, device: torch.device) -> torch.Tensor:
    u = torch.rand(shape, generator=generator, device=generator.device).to(device)
    return -torch.log(-torch.log(u.clamp_(1e-20, 1.0 - 1e-7)))


def raster_decode(
    next_logits: Callable[[torch.Tensor, int], torch.Tensor],
    batch: int,
    length: int,
    start_token: int | torch.Tensor,
    generator: torch.Generator,
    device: torch.device,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    given: torch.Tensor | None = None,
    keep: torch.Tensor | None = None,
) -> torch.Tensor:
    """Sample ``length`` tokens one position at a time in raster order (B×length, int64).

    ``next_logits(tokens, i)`` returns the logits B×V of position i given ``tokens`` (B×(length+1): the start token
    (one for all, or one per row), then every token placed so far). Where ``keep`` (B×length) is True the ``given``
    token is placed instead."""
    tokens = torch.empty((batch, length + 1), dtype=torch.long, device=device)
    tokens[:, 0] = start_token
    for i in range(length):
        logits = filter_logits(next_logits(tokens, i).float() / temperature, top_k, top_p)
        nxt = sample_categorical(logits, 1.0, generator).to(device)
        if keep is not None and given is not None:
            nxt = torch.where(keep[:, i], given[:, i], nxt)
        tokens[:, i + 1] = nxt
    return tokens[:, 1:]
