"""Wall-clock timing with device synchronisation, peak memory during a block, and the timed sampling of a prior."""

from __future__ import annotations

import contextlib
import math
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from ..config import positive
from ..interfaces import Column, Metric, Prior, Tokenizer


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _max_rss_bytes() -> float:
    """The process's lifetime peak resident set (getrusage), where /proc is not there; NaN without ``resource``."""
    try:
        import resource
    except ImportError:  # Windows
        return math.nan
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return float(peak if sys.platform == "darwin" else peak * 1024)  # bytes on macOS, KiB on Linux and the BSDs


class PeakMemory:
    """Peak memory (MiB) during a block. CUDA: the allocator's peak above what was allocated at entry (the block's
    own tensors). Elsewhere: the process's peak resident set size (RSS, absolute: everything the process holds),
    polled from /proc/self/statm, or where that is missing the process's lifetime peak from getrusage (an upper
    bound). ``meaning`` says which, for the reader of the number."""

    def __init__(self, device: torch.device, interval: float = 0.005):
        self.device, self.interval = device, interval
        self.peak_mb = float("nan")
        self._stop = threading.Event()
        self._polled = device.type != "cuda" and os.path.exists("/proc/self/statm")

    @property
    def meaning(self) -> str:
        if self.device.type == "cuda":
            return "CUDA allocator peak above the block's start"
        return "process peak RSS" if self._polled else "process lifetime peak RSS (getrusage)"

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
        elif self._polled:
            self._peak = _rss_bytes()
            self._thread = threading.Thread(target=self._poll, daemon=True)
            self._thread.start()
        return self

    def _poll(self) -> None:
        while not self._stop.wait(self.interval):
            self._peak = max(self._peak, _rss_bytes())

    def __exit__(self, *exc: Any) -> None:
        if self.device.type == "cuda":
            self.peak_mb = (torch.cuda.max_memory_allocated(self.device) - self._base) / 2**20
        elif self._polled:
            self._stop.set()
            self._thread.join()
            self.peak_mb = max(self._peak, _rss_bytes()) / 2**20
        else:
            self.peak_mb = _max_rss_bytes() / 2**20


class Stopwatch:
    """Accumulates seconds over several ``with`` blocks: CUDA events on a GPU (device time of the queued work),
    synchronised wall-clock time elsewhere."""

    def __init__(self, device: torch.device):
        self.device, self.seconds = device, 0.0

    def __enter__(self) -> Stopwatch:
        if self.device.type == "cuda":
            self._events = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            self._events[0].record()
        else:
            self._start = time.perf_counter()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.device.type == "cuda":
            self._events[1].record()
            self._events[1].synchronize()
            self.seconds += self._events[0].elapsed_time(self._events[1]) / 1000
        else:
            self.seconds += time.perf_counter() - self._start


class Marks:
    """Seconds between consecutive marks of one pass: CUDA events on a GPU (read once, after the last mark),
    ``clock`` elsewhere."""

    def __init__(self, device: torch.device, clock: Callable[[], float]):
        self.device, self.clock = device, clock
        self._marks: list[Any] = []

    def mark(self) -> None:
        if self.device.type == "cuda":
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            self._marks.append(event)
        else:
            self._marks.append(self.clock())

    def intervals(self) -> list[float]:
        if self.device.type == "cuda":
            self._marks[-1].synchronize()
            return [a.elapsed_time(b) / 1000 for a, b in zip(self._marks, self._marks[1:])]
        return [b - a for a, b in zip(self._marks, self._marks[1:])]


def time_sampling(
    prior: Prior,
    tokenizer: Tokenizer | None,
    batch_size: int,
    batches: int,
    repeats: int,
    seed: int,
    device: torch.device,
    autocast: Callable[[], Any],
    precision: str,
    options: dict[str, Any],
    labels: torch.Tensor | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, float]:
    """Seconds per image of latent sampling and of decoding at ``batch_size``, each the median over ``repeats``
    passes of ``batches`` batches, plus the peak memory of that work.

    Both stages run as the benchmark runs them: under ``autocast`` with the weights held at ``precision``
    (``inference_weights``). One untimed warm-up batch of the timed shape precedes the passes. Nothing is kept
    between batches. The memory figure (``PeakMemory``, from before the warm-up): on CUDA the allocator peak of the
    work; on CPU the process's peak resident set during it (absolute, so it includes what the process held before)."""
    from ..precision import inference_weights

    shape = prior.latent_shape
    batch_labels = labels[:batch_size].to(device) if labels is not None else None

    def one_batch(g: torch.Generator) -> tuple[float, float]:
        synchronize(device)
        marks = Marks(device, clock)
        marks.mark()
        with autocast():
            codes = prior.sample(batch_size, shape, g, labels=batch_labels, **options)
        marks.mark()
        if tokenizer is not None:
            with autocast():
                tokenizer.decode(codes)
        marks.mark()
        sample, decode = marks.intervals()
        return sample, decode

    sample_s, decode_s = [], []
    with torch.inference_mode(), contextlib.ExitStack() as stack:
        stack.enter_context(inference_weights(prior, precision))
        if tokenizer is not None:
            stack.enter_context(inference_weights(tokenizer, precision))
        with PeakMemory(device) as memory:
            one_batch(torch.Generator(device=device).manual_seed(seed + 7919))  # warm-up: kernels, allocator, caches
            for r in range(repeats):
                g = torch.Generator(device=device).manual_seed(seed + r)
                times = [one_batch(g) for _ in range(batches)]
                sample_s.append(sum(t[0] for t in times) / (batches * batch_size))
                decode_s.append(sum(t[1] for t in times) / (batches * batch_size))
    sample, decode = statistics.median(sample_s), statistics.median(decode_s)
    return {
        "sample_s_per_img": sample,
        "decode_s_per_img": decode if tokenizer is not None else math.nan,
        "total_s_per_img": statistics.median(s + d for s, d in zip(sample_s, decode_s)),
        "peak_mem_mb": memory.peak_mb,
        "timed_batch_size": float(batch_size),
        "timing_repeats": float(repeats),
    }


@dataclass
class SampleTimeConfig:
    repeats: int = 3  # timed passes; the median is reported
    batches: int = 1  # batches of sampling.batch_size per pass

    def validate(self, key: str) -> None:
        positive(key, "repeats", self.repeats)
        positive(key, "batches", self.batches)


class SampleTimeMetric(Metric):
    """Latent sampling and decoding time per image at the run's precision (median of ``repeats`` synchronised
    passes after a warm-up), NFE of the evaluation samples and peak memory during the timed work (CUDA allocator
    peak on GPU, the process's peak RSS on CPU: see ``PeakMemory``)."""

    Config = SampleTimeConfig
    group = "speed"

    def columns(self, config) -> dict[str, Column]:
        return {
            "sample_s_per_img": Column("lower", "sample s/img", 4),
            "decode_s_per_img": Column("lower", "decode s/img", 4),
            "total_s_per_img": Column("lower", "total s/img", 4),
            "nfe": Column("lower", "NFE", 1),
            "peak_mem_mb": Column("lower", "peak MiB", 1),
        }

    def compute(self, ctx, config: SampleTimeConfig) -> dict[str, float]:
        batch = min(ctx.batch_size, len(ctx.samples))
        measured = time_sampling(
            ctx.prior, ctx.tokenizer, batch, config.batches, config.repeats, ctx.seed, ctx.device, ctx.autocast,
            ctx.precision, ctx.options, ctx.sample_labels,
        )  # fmt: skip
        ctx.timing.update(measured)
        return {name: float(ctx.timing.get(name, math.nan)) for name in self.columns(config)}
