"""Every decode of a cell's codes runs at the benchmark's precision, as sampling's own decode does: label metrics
and re-decoded FID batches score the images the cell's FID scored."""

from __future__ import annotations

import contextlib

import torch

from vqbench.runner.evaluate import EvalContext


class PrecisionProbe:
    """A tokenizer whose decoded image says whether autocast was on: white under it, black without."""

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        on = torch.is_autocast_enabled("cpu")
        return torch.full((len(codes), 3, 2, 2), 1.0 if on else -1.0)


def context(autocast) -> EvalContext:
    codes = torch.zeros(3, 2, 2, dtype=torch.long)
    return EvalContext(None, PrecisionProbe(), None, codes, {}, 0, torch.device("cpu"), autocast, {}, 2)  # type: ignore[arg-type]


def test_decoding_uses_the_benchmark_precision():
    bf16 = context(lambda: torch.autocast("cpu", dtype=torch.bfloat16))
    assert (bf16.decode(bf16.samples) == 255).all()
    fp32 = context(contextlib.nullcontext)
    assert (fp32.decode(fp32.samples) == 0).all()
