"""Floating-point operations of a prior, counted by ``torch.utils.flop_counter`` while it runs: one forward pass of
its training loss on one grid (training compute per grid, forward only; SUNDAE's unrolled passes included) and
drawing one sample (every network evaluation of the sampler). Matrix products, convolutions and attention count;
element-wise operations do not."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from .interfaces import Prior

aten = torch.ops.aten


def _attention(query: Any, key: Any, value: Any, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
    """Q·Kᵀ and A·V of ``scaled_dot_product_attention`` (torch counts its CUDA kernels but not the CPU one)."""
    *batch, n, d = query
    heads = 1
    for size in batch:
        heads *= size
    m, e = key[-2], value[-1]
    return 2 * heads * n * m * d + 2 * heads * n * m * e


CUSTOM = {aten._scaled_dot_product_flash_attention_for_cpu: _attention}


def count(fn: Callable[[], Any]) -> float:
    """Floating-point operations ``fn`` performs (multiply-adds count two)."""
    with torch.no_grad(), FlopCounterMode(display=False, custom_mapping=CUSTOM) as counter:
        fn()
    return float(counter.get_total_flops())


def prior_flops(
    prior: Prior, codes: torch.Tensor, labels: torch.Tensor | None, generator: torch.Generator, sampling: dict[str, Any] | None = None
) -> dict[str, float]:
    """GFLOPs of the training loss's forward pass on one grid and of sampling one grid with the row's sampler
    options (``codes``: 1×h×w)."""
    shape = (int(codes.shape[1]), int(codes.shape[2]))
    return {
        "train_gflops": count(lambda: prior.loss(codes, labels)) / 1e9,
        "sample_gflops": count(lambda: prior.sample(1, shape, generator, labels=labels, **(sampling or {}))) / 1e9,
    }
