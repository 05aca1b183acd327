"""Sampling of a cell, metric validation and the context metrics compute from."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from tqdm.auto import tqdm

from .. import distributed
from ..config import parse, required
from ..errors import ConfigError, DiskFull
from ..interfaces import Prior, Tokenizer, float_to_uint8
from ..metrics.bootstrap import apply_bootstrap
from ..metrics.features import FeatureSet
from ..plugins import Registries
from .data import DataBundle, decode_to_uint8
from .schema import Benchmark, MetricsSection, SamplingSection
from .train import class_labels

log = logging.getLogger(__name__)


def generator(device: torch.device, seed: int) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def batch_seed(seed: int, batch: int) -> int:
    """Seed of sampling batch ``batch``: each batch has its own generator, so batches can run on any rank."""
    return seed * 1_048_576 + batch


@dataclass
class Samples:
    """A cell's samples as rank 0 holds them after sampling (other ranks hold an empty one)."""

    codes: torch.Tensor
    images: torch.Tensor | None  # uint8, None when not kept (too large) or without a tokenizer
    info: dict[str, float]
    features: torch.Tensor | None = None  # of the decoded images, when an extractor was given


@torch.inference_mode()
def generate_samples(
    prior: Prior,
    tokenizer: Tokenizer | None,
    n: int,
    batch_size: int,
    seed: int,
    device: torch.device,
    autocast: Callable[[], Any],
    options: dict[str, Any],
    labels: torch.Tensor | None = None,
    keep_images_bytes: int = 1 << 30,
    extract: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> Samples:
    """Sample ``n`` grids (and decode them) for the metrics; the network evaluations per sample are recorded here,
    wall-clock time by the ``sample_time`` metric (``vqbench.metrics.timing.time_sampling``).

    Batch b draws from its own generator (``batch_seed``); under torchrun rank r samples, decodes and (with
    ``extract``) computes the image features of batches b ≡ r mod N, and rank 0 gathers everything in batch order,
    so the result does not depend on the number of ranks. Images are kept while they fit in ``keep_images_bytes``."""
    world = distributed.world()
    shape = prior.latent_shape
    starts = list(range(0, n, batch_size))
    mine: list[tuple[int, dict[str, Any]]] = []
    kept_bytes = 0
    with tqdm(total=n, desc="sample", unit="img", leave=False, disable=not world.main) as bar:
        for k in world.mine(len(starts)):
            start = starts[k]
            b = min(batch_size, n - start)
            batch_labels = labels[start : start + b].to(device) if labels is not None else None
            with autocast():
                batch = prior.sample(b, shape, generator(device, batch_seed(seed, k)), labels=batch_labels, **options)
            part: dict[str, Any] = {"codes": batch.cpu(), "nfe": prior.last_nfe * b}
            if tokenizer is not None:
                with autocast():
                    images = float_to_uint8(tokenizer.decode(batch.to(device)))
                if extract is not None:
                    part["features"] = extract(images).double().cpu()
                kept_bytes += images.numel()
                part["images"] = images.cpu() if kept_bytes * world.size < keep_images_bytes else None
            mine.append((k, part))
            bar.update(b * world.size)
    parts = distributed.gather_batches(mine)
    if parts is None:
        return Samples(torch.zeros(0, *shape, dtype=torch.long), None, {})
    images_list = [p.get("images") for p in parts]
    keep = tokenizer is not None and all(i is not None for i in images_list)
    info = {"nfe": sum(p["nfe"] for p in parts) / n, "batch_size": float(batch_size)}
    features = torch.cat([p["features"] for p in parts]) if extract is not None and tokenizer is not None else None
    return Samples(torch.cat([p["codes"] for p in parts]), torch.cat(images_list) if keep else None, info, features)  # type: ignore[arg-type]


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
    precision: str = "fp32"
    sample_labels: torch.Tensor | None = None  # class labels the samples were drawn with (conditional priors)
    notes: dict[str, str] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)  # metric name → why it failed in this cell
    artifacts: dict[str, Any] = field(default_factory=dict)
    cache: dict[str, Any] = field(default_factory=dict)

    @property
    def test_codes(self) -> torch.Tensor:
        return self.data.test.tensor()

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """uint8 images of ``codes``, decoded at the benchmark's precision as the sampled images are (so label
        metrics, inpainting and re-decoded FID batches score the same images a cell's FID does)."""
        with self.autocast():
            return decode_to_uint8(required(self.tokenizer, "tokenizer"), codes, self.device, self.batch_size)

    def inpainting_inputs(self, count: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(uint8 images, codes, class labels or None) of the last ``count`` held-out items: disjoint from the
        reference set, which is taken from the front of the split (see ``reference_split``)."""
        start = len(self.data.test) - count
        images, codes = self.data.reference_images(count, self.decode, start=start)
        labels = class_labels(self.data.test)
        return images, codes, (labels[start:] if labels is not None else None)

    @torch.inference_mode()
    def inpaint(self, codes: torch.Tensor, keep_mask: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Inpaint ``codes`` (held-out grids, with their own class labels if any)."""
        g = generator(self.device, self.seed + 104729)
        out = []
        for start in range(0, len(codes), self.batch_size):
            c, k = codes[start : start + self.batch_size], keep_mask[start : start + self.batch_size]
            extra = {"labels": labels[start : start + len(c)].to(self.device)} if labels is not None else {}
            with self.autocast():
                out.append(self.prior.inpaint(c.to(self.device), k.to(self.device), g, **extra, **self.options).cpu())
        return torch.cat(out)

    @torch.inference_mode()
    def held_out_nll(self) -> float:
        """Mean NLL (bits per token) of the held-out latents, computed once per cell; ``held_out_nll_se`` is its
        standard error over the held-out grids (it includes any Monte-Carlo noise of the estimator)."""
        if "nll_bpt" not in self.cache:
            g = generator(self.device, self.seed + 15485863)
            labels = class_labels(self.data.test)
            values = []
            for start in range(0, len(self.data.test), self.batch_size):
                codes = self.data.test.tensor(slice(start, start + self.batch_size)).to(self.device)
                extra = {"labels": labels[start : start + len(codes)].to(self.device)} if labels is not None else {}
                with self.autocast():
                    values.append(self.prior.nll(codes, generator=g, **extra).double().cpu())
            per_grid = torch.cat(values)
            self.cache["nll_bpt"] = float(per_grid.mean())
            self.cache["nll_bpt_se"] = float(per_grid.std(unbiased=True) / len(per_grid) ** 0.5) if len(per_grid) > 1 else float("nan")
            note = self.prior.nll_note
            if note:
                self.notes["nll"] = note
        return self.cache["nll_bpt"]

    def held_out_nll_se(self) -> float:
        self.held_out_nll()
        return self.cache["nll_bpt_se"]


def sampling_labels(sampling: SamplingSection, data: DataBundle, n: int) -> torch.Tensor | None:
    """Class labels for ``n`` samples: the configured class list cycled, else the held-out labels cycled (so the
    samples follow the data's class distribution), else None."""
    if sampling.class_labels:
        return torch.tensor(sampling.class_labels, dtype=torch.long).repeat(-(-n // len(sampling.class_labels)))[:n]
    held_out = class_labels(data.test)
    return held_out.repeat(-(-n // len(held_out)))[:n] if held_out is not None and len(held_out) else None


def metric_configs(metrics: MetricsSection, regs: Registries, sampling: SamplingSection | None = None) -> dict[str, tuple[Any, Any]]:
    """Validated (metric, config) per enabled metric; fails before any work on a bad setting, including settings
    that do not fit the benchmark's sample and reference counts (``sampling`` given: the benchmark decodes images,
    see ``image_sampling``)."""
    out: dict[str, tuple[Any, Any]] = {}
    for name in metrics.enabled:
        cls = regs.metrics.get(name, "metrics.enabled")
        out[name] = (cls(), parse(cls.Config, metrics.settings.get(name, {}), f"metrics.{name}"))
    for name in metrics.settings:
        regs.metrics.get(name, f"metrics.{name}")
    if sampling is not None:
        for name, (metric, config) in out.items():
            metric.check_counts(config, f"metrics.{name}", sampling.num_samples, metrics.num_real)
    if "inpainting" in out and out["inpainting"][1].fid:
        dims = getattr(regs.feature_extractors.get(metrics.feature_extractor, "metrics.feature_extractor"), "dims", 0)
        images = out["inpainting"][1].num_images
        if images < dims:
            raise ConfigError(
                "metrics.inpainting.fid",
                f"FID of {images} images with {dims}-d features is mostly estimator bias; set num_images ≥ {dims} or fid: false (KID is always reported)",
            )
    apply_bootstrap(out, metrics.bootstrap)  # FID/KID/PRDC percentile CIs over each cell's (or outside row's) samples
    return out


def image_sampling(bench: Benchmark) -> SamplingSection | None:
    """The sampling section when the benchmark decodes images (image metrics apply), else None."""
    tokenizer = bench.tokenizer
    return bench.sampling if tokenizer is not None and (bench.latents is None or tokenizer.checkpoint is not None) else None


def reference_split(metrics: MetricsSection, configured: dict[str, tuple[Any, Any]], test_count: int) -> int:
    """Number of reference images (the first ones of the held-out split) once the inpainting images (the last
    ``num_images``) are set aside; fails when the split cannot hold both, or too few remain for KID/PRDC."""
    inpaint = configured["inpainting"][1].num_images if "inpainting" in configured else 0
    if inpaint and inpaint + metrics.num_real > test_count:
        raise ConfigError(
            "metrics.num_real",
            f"{metrics.num_real} reference images + {inpaint} inpainting images (metrics.inpainting.num_images) exceed "
            f"the {test_count} held-out items; the two sets are disjoint, so lower one of them or enlarge the test split",
        )
    count = min(metrics.num_real, test_count)
    if "kid" in configured and configured["kid"][1].subset_size > count:
        raise ConfigError(
            "metrics.kid.subset_size", f"{configured['kid'][1].subset_size} exceeds the {count} reference images the {test_count} held-out items give"
        )
    return count


def evaluate(ctx: EvalContext, configured: dict[str, tuple[Any, Any]]) -> tuple[dict[str, float], dict[str, dict[str, Any]]]:
    """(values, column metadata in display order: direction, label, digits, group). A metric that raises is
    recorded in ``ctx.failed`` (name → error) with its columns n/a; the other metrics still run."""
    values: dict[str, float] = {}
    columns: dict[str, dict[str, Any]] = {}
    for name, (metric, config) in configured.items():
        cols = metric.columns(config)
        columns.update({col_name: {**asdict(col), "group": metric.group} for col_name, col in cols.items()})
        if metric.needs_images and (ctx.tokenizer is None or ctx.features is None):
            values.update({col_name: math.nan for col_name in cols})
            continue
        try:
            values.update(metric.compute(ctx, config))
        except DiskFull:  # the run stops (exit 2); a rerun recomputes this cell
            raise
        except Exception as err:  # noqa: BLE001 - one metric's failure must not lose the cell's other numbers
            log.exception("metric %s failed", name)
            ctx.failed[name] = f"{type(err).__name__}: {err}"
            values.update({col_name: math.nan for col_name in cols})
    return values, columns
