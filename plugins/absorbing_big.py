"""Unleashing Transformers' big samples: absorbing-diffusion sampling of grids larger than the training grid.

At every step each window of the training size, slid with stride ``window_step`` over the big grid, is denoised by the
prior's network; the windows' softmax probabilities (temperature 1) are averaged per position (a mixture over the
windows that cover it), the mixture is sharpened as p^(1/temperature) (their softmax((log p + log K) / temperature),
the log K being a constant shift), and the positions chosen this step are drawn from it. ``order``: ``random`` is
their Bernoulli rule (at t = S … 1 each masked position is revealed with probability 1/t, S = ``steps``, default the
big grid's token count, their ``time_steps``); ``raster`` reveals the big grid in raster order, S even chunks (default
one token per step, as their script runs). Their loop stops before the last window when the stride does not reach the
border, leaving those positions uncovered (a NaN mixture); here the last window is always included.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal

import torch

from vqbench.sampling import sample_categorical

Order = Literal["random", "raster"]


def window_offsets(size: int, window: int, step: int) -> list[int]:
    """Window starts 0, step, 2·step, … along one side, plus ``size − window`` when the stride does not reach it."""
    if size < window:
        raise ValueError(f"the big grid side {size} is smaller than the training side {window}")
    if step < 1 or (step > window and size > window):
        raise ValueError(f"window_step must lie in [1, {window}] (windows must cover the grid), got {step}")
    starts = list(range(0, size - window + 1, step))
    return starts if starts[-1] == size - window else [*starts, size - window]


def reveal_steps(order: Order, shape: tuple[int, int, int], steps: int, generator: torch.Generator, device: torch.device) -> Iterator[torch.Tensor]:
    """Per step, the positions (n×H×W bool) chosen for unmasking, before excluding revealed ones (``random``: u < 1/t)."""
    n, h, w = shape
    if order == "raster":
        index = torch.arange(h * w, device=device).view(1, h, w)
        bounds = [round(h * w * j / steps) for j in range(steps + 1)]
        for lo, hi in zip(bounds, bounds[1:]):
            yield ((index >= lo) & (index < hi)).expand(n, h, w)
    else:
        for t in range(steps, 0, -1):
            yield torch.rand(shape, generator=generator, device=generator.device).to(device) < 1.0 / t


class BigSampling:
    """Mixin of the absorbing prior: ``sample_big`` over grids larger than the training grid."""

    net: torch.nn.Module
    mask_token: int
    codebook_size: int
    latent_shape: tuple[int, int]
    config: Any
    last_nfe: int
    device: torch.device

    @torch.no_grad()
    def window_mixture(self, x: torch.Tensor, windows: list[tuple[int, int]], labels: torch.Tensor | None, window_batch: int) -> torch.Tensor:
        """Per position of x (n×H×W), the mean over the ``windows`` covering it of their softmax probabilities
        (n×H×W×V, float32; zero where no window covers the position)."""
        (n, big_h, big_w), (h, w) = x.shape, self.latent_shape
        total = torch.zeros(n, big_h, big_w, self.codebook_size, device=x.device)
        per_call = max(1, window_batch // n)
        for start in range(0, len(windows), per_call):
            group = windows[start : start + per_call]
            crops = torch.cat([x[:, i : i + h, j : j + w].reshape(n, h * w) for i, j in group])  # window-major
            group_labels = labels.repeat(len(group)) if labels is not None else None
            probs = torch.softmax(self.net(crops, group_labels).float(), dim=-1).view(len(group), n, h, w, -1)
            for k, (i, j) in enumerate(group):
                total[:, i : i + h, j : j + w] += probs[k]
        return total / total.sum(-1, keepdim=True).clamp_min(1e-30)  # the sum over codes is the window count

    @torch.no_grad()
    def sample_big(
        self,
        n: int,
        big_shape: tuple[int, int],
        generator: torch.Generator,
        labels: torch.Tensor | None = None,
        window_step: int = 1,
        order: Order = "random",
        temperature: float | None = None,
        steps: int | None = None,
        window_batch: int = 256,
    ) -> torch.Tensor:
        """``n`` grids of ``big_shape`` (LongTensor n×H×W) from overlapping training-size windows (module docstring).

        ``temperature`` defaults to the prior's sampler temperature (``top_k`` does not apply: their method has none);
        ``window_batch`` caps the window crops per network call. ``last_nfe`` counts window evaluations per sample
        (only windows covering a position revealed at that step are evaluated: the others cannot change the draw)."""
        (h, w), (big_h, big_w) = self.latent_shape, (int(big_shape[0]), int(big_shape[1]))
        windows = [(i, j) for i in window_offsets(big_h, h, window_step) for j in window_offsets(big_w, w, window_step)]
        if order not in ("random", "raster"):
            raise ValueError(f"order must be 'random' or 'raster', got {order!r}")
        temperature = self.config.temperature if temperature is None else temperature
        total_steps = steps or big_h * big_w
        if temperature <= 0 or total_steps < 1:
            raise ValueError(f"temperature and steps must be positive, got {temperature} and {total_steps}")
        device = self.device
        labels = labels.to(device) if labels is not None else None
        x = torch.full((n, big_h, big_w), self.mask_token, dtype=torch.long, device=device)
        masked = torch.ones_like(x, dtype=torch.bool)
        evaluations = 0
        for chosen in reveal_steps(order, (n, big_h, big_w), total_steps, generator, device):
            reveal = chosen & masked
            if not reveal.any():
                continue
            needed = [(i, j) for i, j in windows if reveal[:, i : i + h, j : j + w].any()]
            mixture = self.window_mixture(x, needed, labels, window_batch)
            x[reveal] = sample_categorical(mixture[reveal].log() / temperature, 1.0, generator).to(device)
            masked &= ~reveal
            evaluations += len(needed)
        self.last_nfe = evaluations
        return x
