"""Timed sampling of a cell and the context metrics compute from."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import torch
from tqdm.auto import tqdm

from ..config import parse
from ..interfaces import Prior, Tokenizer, float_to_uint8
from ..metrics.features import FeatureSet
from ..metrics.timing import PeakMemory, Stopwatch
from ..plugins import Registries
from .data import DataBundle, decode_to_uint8
from .schema import MetricsSection, SamplingSection
from .train import class_labels


def generator(device: torch.device, seed: int) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


@torch.inference_mode()
def sample_timed(
    prior: Prior, tokenizer: Tokenizer | None, n: int, batch_size: int, seed: int, device: torch.device,
    autocast: Callable[[], Any], options: dict[str, Any], labels: torch.Tensor | None = None, keep_images_bytes: int = 1 << 30,
) -> tuple[torch.Tensor, torch.Tensor | None, dict[str, float]]:
    """Sample ``n`` grids (and decode them), timing sampling and decoding separately after one untimed warm-up batch
    (seconds per image at ``batch_size``, device synchronised).

    Returns (codes, uint8 images or None when they would exceed ``keep_images_bytes``, timing)."""
    shape = prior.latent_shape
    g = generator(device, seed)
    sample_watch, decode_watch = Stopwatch(device), Stopwatch(device)
    codes, images, nfe = [], [], 0.0
    keep = tokenizer is not None
    # memory is measured from before the warm-up: on CPU the allocator keeps the warm-up's working set resident
    with PeakMemory(device) as memory, tqdm(total=n, desc="sample", unit="img", leave=False) as bar:
        with autocast():  # warm-up (untimed): kernels, allocator, caches
            warm_labels = labels[: min(batch_size, n)].to(device) if labels is not None else None
            warm = prior.sample(min(batch_size, n), shape, generator(device, seed + 7919), labels=warm_labels, **options)
            if tokenizer is not None:
                tokenizer.decode(warm.to(device))
        for start in range(0, n, batch_size):
            b = min(batch_size, n - start)
            batch_labels = labels[start : start + b].to(device) if labels is not None else None
            with sample_watch, autocast():
                batch = prior.sample(b, shape, g, labels=batch_labels, **options)
            nfe += prior.last_nfe * b
            codes.append(batch.cpu())
            if tokenizer is not None:
                with decode_watch:
                    decoded = tokenizer.decode(batch.to(device))
                if keep:
                    images.append(float_to_uint8(decoded).cpu())
                    keep = sum(i.numel() for i in images) < keep_images_bytes
            bar.update(b)
    timing = {
        "sample_s_per_img": sample_watch.seconds / n,
        "decode_s_per_img": decode_watch.seconds / n if tokenizer is not None else math.nan,
        "total_s_per_img": (sample_watch.seconds + decode_watch.seconds) / n,
        "nfe": nfe / n,
        "peak_mem_mb": memory.peak_mb,
        "batch_size": float(batch_size),
    }
    return torch.cat(codes), (torch.cat(images) if keep and images else None), timing


@dataclass
class EvalContext:
    prior: Prior
    tokenizer: Tokenizer | None
    data: DataBundle
    samples: torch.Tensor
    timing: dict[str, float]
    seed: int
    device: torch.device
    autocast: Callable[[], Any]
    options: dict[str, Any]
    batch_size: int
    features: FeatureSet | None = None
    notes: dict[str, str] = field(default_factory=dict)
    artifacts: dict[str, Any] = field(default_factory=dict)
    cache: dict[str, Any] = field(default_factory=dict)

    @property
    def test_codes(self) -> torch.Tensor:
        return self.data.test.tensor()

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        return decode_to_uint8(self.tokenizer, codes, self.device, self.batch_size)

    def inpainting_inputs(self, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.data.reference_images(count, self.decode)

    @torch.inference_mode()
    def inpaint(self, codes: torch.Tensor, keep_mask: torch.Tensor) -> torch.Tensor:
        """Inpaint the first len(codes) held-out grids (their own class labels, if any)."""
        g = generator(self.device, self.seed + 104729)
        labels = class_labels(self.data.test)
        out = []
        for start in range(0, len(codes), self.batch_size):
            c, k = codes[start : start + self.batch_size], keep_mask[start : start + self.batch_size]
            extra = {"labels": labels[start : start + len(c)].to(self.device)} if labels is not None else {}
            with self.autocast():
                out.append(self.prior.inpaint(c.to(self.device), k.to(self.device), g, **extra, **self.options).cpu())
        return torch.cat(out)

    @torch.inference_mode()
    def held_out_nll(self) -> float:
        """Mean NLL (bits per token) of the held-out latents, computed once per cell."""
        if "nll_bpt" not in self.cache:
            g = generator(self.device, self.seed + 15485863)
            labels = class_labels(self.data.test)
            values = []
            for start in range(0, len(self.data.test), self.batch_size):
                codes = self.data.test.tensor(slice(start, start + self.batch_size)).to(self.device)
                extra = {"labels": labels[start : start + len(codes)].to(self.device)} if labels is not None else {}
                with self.autocast():
                    values.append(self.prior.nll(codes, generator=g, **extra).double().cpu())
            self.cache["nll_bpt"] = float(torch.cat(values).mean())
            if getattr(self.prior, "nll_note", None):
                self.notes["nll"] = self.prior.nll_note
        return self.cache["nll_bpt"]


def sampling_labels(sampling: SamplingSection, data: DataBundle, n: int) -> torch.Tensor | None:
    """Class labels for ``n`` samples: the configured class list cycled, else the held-out labels cycled (so the
    samples follow the data's class distribution), else None."""
    if sampling.class_labels:
        return torch.tensor(sampling.class_labels, dtype=torch.long).repeat(-(-n // len(sampling.class_labels)))[:n]
    held_out = class_labels(data.test)
    return held_out.repeat(-(-n // len(held_out)))[:n] if held_out is not None and len(held_out) else None


def metric_configs(metrics: MetricsSection, regs: Registries) -> dict[str, tuple[Any, Any]]:
    """Validated (metric, config) per enabled metric; fails before any work on a bad setting."""
    out = {}
    for name in metrics.enabled:
        cls = regs.metrics.get(name, "metrics.enabled")
        out[name] = (cls(), parse(cls.Config, metrics.settings.get(name, {}), f"metrics.{name}"))
    for name in metrics.settings:
        regs.metrics.get(name, f"metrics.{name}")
    return out


def evaluate(ctx: EvalContext, configured: dict[str, tuple[Any, Any]]) -> tuple[dict[str, float], dict[str, dict[str, Any]]]:
    """(values, column metadata in display order: direction, label, digits, group)."""
    values: dict[str, float] = {}
    columns: dict[str, dict[str, Any]] = {}
    for metric, config in configured.values():
        cols = metric.columns(config)
        columns.update({name: {**asdict(col), "group": metric.group} for name, col in cols.items()})
        if metric.needs_images and (ctx.tokenizer is None or ctx.features is None):
            values.update({name: math.nan for name in cols})
            continue
        values.update(metric.compute(ctx, config))
    return values, columns
