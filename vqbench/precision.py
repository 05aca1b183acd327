"""Precision handling: bf16 autocast for training and inference, with weights held in bf16 while sampling."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from typing import Literal

import torch

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "bf16")
Precision = Literal["fp32", "bf16"]


# ATen kernel levels that never use AVX512_BF16/AMX instructions, whatever the chip has
# (e.g. a run limited with ATEN_CPU_CAPABILITY=avx2)
EMULATING_CPU_CAPABILITIES = ("DEFAULT", "AVX2")


def cpu_has_native_bf16() -> bool:
    """True when this CPU computes bf16 in hardware (AVX512_BF16 or AMX) and torch's kernels use it; elsewhere torch
    emulates bf16 slowly."""
    if torch.backends.cpu.get_cpu_capability() in EMULATING_CPU_CAPABILITIES:
        return False
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in probes)


def cuda_has_native_bf16(device: torch.device) -> bool:
    """True for CUDA devices with bf16 tensor cores (compute capability 8.0 and newer)."""
    return torch.cuda.is_available() and torch.cuda.get_device_capability(device)[0] >= 8


def native_bf16(device: torch.device) -> tuple[bool, str]:
    """(whether `device` runs bf16 natively, the hardware fact that decides it)."""
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        name = torch.cuda.get_device_name(device)
        ok = cuda_has_native_bf16(device)
        return ok, f"{name} (compute capability {major}.{minor}) {'has' if ok else 'lacks'} bf16 tensor cores"
    if device.type == "cpu":
        ok = cpu_has_native_bf16()
        capability = torch.backends.cpu.get_cpu_capability()
        return ok, f"CPU ({capability}) {'has' if ok else 'lacks'} AVX512_BF16/AMX"
    return False, f"{device.type} bf16 support unknown"


def resolve_precision(requested: str, device: torch.device) -> tuple[Precision, str]:
    """The precision to run ("fp32" or "bf16") for `requested` ("auto", "fp32" or "bf16") on `device`, and why.

    `auto` picks bf16 only where the hardware runs it natively; an explicit `bf16` on hardware that emulates it is
    honoured with a one-line warning, since it is slower there than fp32."""
    if requested == "fp32":
        return "fp32", "fp32 requested"
    native, fact = native_bf16(device)
    if requested == "bf16":
        if not native:
            log.warning("precision bf16 on hardware without native bf16 (%s): expect it to run slower than fp32; use precision: auto or fp32", fact)
        return "bf16", "bf16 requested" + ("" if native else f"; emulated: {fact}")
    if requested != "auto":
        raise ValueError(f"precision must be one of {PRECISIONS}, got {requested!r}")
    return ("bf16" if native else "fp32"), f"auto: {fact}"


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


def compile_networks(module: torch.nn.Module) -> list[str]:
    """``torch.compile`` every network of a prior in place (``Module.compile``: parameter names and checkpoints are
    unchanged), descending through module lists; returns the names of the compiled modules."""
    compiled = []
    for name, child in module.named_children():
        if isinstance(child, (torch.nn.ModuleList, torch.nn.ModuleDict)):
            compiled += [f"{name}.{sub}" for sub in compile_networks(child)]
        elif any(True for _ in child.parameters()):
            child.compile()
            compiled.append(name)
    return compiled
