"""Precision handling: bf16 autocast for training and inference, with weights held in bf16 while sampling."""
from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import torch


def make_autocast(device: torch.device, precision: str) -> Callable[[], contextlib.AbstractContextManager]:
    """A factory of autocast contexts: bf16 autocast, or a no-op for fp32."""
    if precision == "bf16":
        return lambda: torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext


@contextlib.contextmanager
def inference_weights(module: torch.nn.Module, precision: str) -> Iterator[None]:
    """For bf16 inference, hold floating-point parameters in bf16 (restored afterwards).

    Autocast casts fp32 weights to bf16 on every call when its cast cache cannot apply (as under inference mode), so
    small-batch decoding spent most of its time copying weights. Results are those of autocast (its fp32 ops still
    upcast); only parameters change dtype, buffers such as count tables keep theirs."""
    if precision != "bf16":
        yield
        return
    originals = {}
    for param in module.parameters():
        if param.is_floating_point() and param.dtype != torch.bfloat16:
            originals[param] = param.data
            param.data = param.data.to(torch.bfloat16)
    try:
        yield
    finally:
        for param, data in originals.items():
            param.data = data
