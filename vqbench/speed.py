"""Speed measurement of one prior configuration: backbone tokens/s and sample seconds per image, per precision.

Weights are random: with fixed step counts (early stop off) sampling does exactly the work a trained model does.
"""

from __future__ import annotations

from typing import Any

import torch

from .config import merged, parse, to_dict
from .metrics.timing import PeakMemory, Stopwatch, synchronize
from .plugins import registries
from .precision import compile_networks, inference_weights, make_autocast
from .runner.data import trainable


def _timed(fn, device: torch.device, min_seconds: float, min_runs: int = 3) -> tuple[float, int]:
    """(seconds per call, calls) after one untimed warm-up call."""
    fn()
    runs, watch = 0, Stopwatch(device)
    while runs < min_runs or watch.seconds < min_seconds:
        with watch:
            fn()
        runs += 1
    return watch.seconds / runs, runs


@torch.inference_mode()
def measure(
    prior_name: str, params: dict[str, Any], shape: tuple[int, int], codebook_size: int, batch: int, samples: int,
    options: dict[str, Any], precision: str, device: torch.device, decode_preset: str | None = None, seed: int = 0,
    min_seconds: float = 2.0, compile: bool = False,
) -> dict[str, Any]:  # fmt: skip
    regs = registries()
    cls = regs.priors.get(prior_name, "prior")
    torch.manual_seed(seed)
    params = merged(to_dict(cls.Config()), params)  # `backbone.dim=64` changes one key of the default backbone
    prior = cls(parse(cls.Config, params, "params"), codebook_size, shape).to(device).eval()
    if compile:
        compile_networks(prior)
    autocast = make_autocast(device, precision)
    n_tokens = shape[0] * shape[1]
    row: dict[str, Any] = {
        "prior": prior_name,
        "precision": precision,
        "compiled": compile,
        "batch": batch,
        "params_m": sum(p.numel() for p in prior.parameters()) / 1e6,
    }
    net = getattr(prior, "net", None)
    generator = torch.Generator(device=device).manual_seed(seed)
    with inference_weights(prior, precision):
        if net is not None and not getattr(net, "causal", False):
            codes = torch.randint(codebook_size, (batch, n_tokens), device=device)
            with autocast():
                seconds, _ = _timed(lambda: net(codes), device, min_seconds)
            row["backbone_tokens_per_s"] = batch * n_tokens / seconds
        row |= _sample_rate(prior, shape, batch, samples, options, autocast, generator, device, seed)
    if decode_preset:
        row |= _decode_rate(decode_preset, shape, batch, precision, autocast, device, min_seconds, compile)
        row["total_s_per_img"] = row["sample_s_per_img"] + row["decode_s_per_img"]
    synchronize(device)
    return row


def _decode_rate(
    preset: str, shape: tuple[int, int], batch: int, precision: str, autocast, device: torch.device, min_seconds: float,
    compile: bool,
) -> dict[str, float]:  # fmt: skip
    """Decode seconds per image of a randomly initialised vqgan preset, at the sampling batch and precision (as the
    benchmark's sample-time metric decodes)."""
    tok = trainable(registries().tokenizers.get("vqgan"), "vqgan").from_preset(preset).to(device).eval()
    if compile:
        compile_networks(tok)
    codes = torch.randint(tok.codebook_size, (batch, *shape), device=device)
    with inference_weights(tok, precision), autocast():
        seconds, _ = _timed(lambda: tok.decode(codes), device, min_seconds, min_runs=2)
    return {"decode_s_per_img": seconds / batch}


def _sample_rate(prior, shape, batch, samples, options, autocast, generator, device, seed) -> dict[str, Any]:
    watch, done, nfe = Stopwatch(device), 0, 0.0
    with PeakMemory(device) as memory:  # CUDA: allocator peak of the work; CPU: the process's peak RSS during it
        for size in {batch, samples % batch or batch}:  # warm-up of every timed batch shape (compiled code included)
            with autocast():
                prior.sample(size, shape, torch.Generator(device=device).manual_seed(seed + 1), **options)
        while done < samples:
            b = min(batch, samples - done)
            with watch, autocast():
                prior.sample(b, shape, generator, **options)
            nfe += prior.last_nfe * b
            done += b
    return {"sample_s_per_img": watch.seconds / samples, "nfe": nfe / samples, "peak_mem_mb": memory.peak_mb, "peak_mem": memory.meaning}


def format_rows(rows: list[dict[str, Any]]) -> str:
    import pandas as pd

    table = pd.DataFrame(rows)
    return table.to_markdown(index=False, floatfmt=".4g") if not table.empty else "(nothing measured)"
