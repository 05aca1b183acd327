"""Precision resolution: `auto` follows the hardware; explicit bf16 on emulating hardware warns once."""

from __future__ import annotations

import logging

import pytest
import torch

from vqbench import precision
from vqbench.precision import resolve_precision

CPU = torch.device("cpu")


@pytest.fixture
def cpu_bf16(monkeypatch):
    """Set what the CPU capability probe reports."""

    def set_native(native: bool, capability: str) -> None:
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: native)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
        monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)

    return set_native


def test_auto_is_fp32_on_a_cpu_without_native_bf16(cpu_bf16):
    cpu_bf16(False, "AVX2")
    resolved, why = resolve_precision("auto", CPU)
    assert resolved == "fp32"
    assert why == "auto: CPU (AVX2) lacks AVX512_BF16/AMX"


def test_auto_is_bf16_on_a_cpu_with_native_bf16(cpu_bf16):
    cpu_bf16(True, "AVX512")
    assert resolve_precision("auto", CPU) == ("bf16", "auto: CPU (AVX512) has AVX512_BF16/AMX")


def test_amx_alone_counts_as_native(monkeypatch):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    assert precision.cpu_has_native_bf16()


def test_kernels_limited_to_avx2_emulate_bf16_even_on_a_bf16_chip(cpu_bf16):
    cpu_bf16(True, "AVX2")  # e.g. ATEN_CPU_CAPABILITY=avx2 on an AVX512_BF16 CPU
    assert resolve_precision("auto", CPU) == ("fp32", "auto: CPU (AVX2) lacks AVX512_BF16/AMX")


def test_explicit_choices_are_kept_and_emulated_bf16_warns_in_one_line(cpu_bf16, caplog):
    cpu_bf16(False, "AVX2")
    assert resolve_precision("fp32", CPU)[0] == "fp32"
    with caplog.at_level(logging.WARNING, logger="vqbench.precision"):
        resolved, why = resolve_precision("bf16", CPU)
    assert resolved == "bf16" and "emulated" in why
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "\n" not in warnings[0] and "slower than fp32" in warnings[0]
    caplog.clear()
    cpu_bf16(True, "AVX512")
    with caplog.at_level(logging.WARNING, logger="vqbench.precision"):
        assert resolve_precision("bf16", CPU) == ("bf16", "bf16 requested")
    assert not caplog.records


def test_auto_on_cuda_follows_compute_capability(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla T4")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))
    assert resolve_precision("auto", torch.device("cuda"))[0] == "fp32"
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    assert resolve_precision("auto", torch.device("cuda"))[0] == "bf16"
