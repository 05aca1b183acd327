"""`vqbench evaluate RESULTS --samples PATH --label NAME`: score samples produced by any model under a results
folder's protocol (its reference features and statistics, feature network, sample count and metric settings) and add
them to its report as one row, stored in ``outside/<label>/`` so that `vqbench report` rebuilds it.

Everything is checked before the first write (results folder, label, input shape and dtype, readable images, codes
inside the codebook, an unchanged reference-statistics file); the row's folder is then written atomically."""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import __version__
from ..config import parse
from ..errors import ConfigError, DataError
from ..images import save_grid
from ..interfaces import NoConfig, Prior
from ..io import atomic_path, read_json, sha256_file, write_json
from ..metrics.features import FeatureSet
from ..plugins import Registries
from ..precision import make_autocast
from ..report_outside import FIRST_INDEX, NOT_APPLICABLE, OUTSIDE_DIR, PROVENANCE_FILE, RECORD_FILE, outside_records, protocol_key
from .data import DataBundle
from .evaluate import EvalContext, evaluate, image_sampling, metric_configs
from .export import decode_batch, open_results
from .outside_input import OutsideSamples, fit_resolution, read_samples
from .plan import resolve_device
from .run import reference_features
from .schema import Benchmark, expand_variants

log = logging.getLogger(__name__)


class OutsidePrior(Prior):
    """Stands for the model behind outside samples: no likelihood, no sampler, no inpainting, no class labels."""

    Config = NoConfig

    def loss(self, codes: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError("outside samples have no model to train")

    def sample(
        self, n: int, latent_shape: tuple[int, int], generator: torch.Generator, labels: torch.Tensor | None = None, **opts: Any
    ) -> torch.Tensor:
        raise NotImplementedError("outside samples have no model to sample from")


@dataclass
class OutsideContext(EvalContext):
    """A metric context over outside samples. For images, ``samples`` holds their indices (N×1×1) and ``decode``
    returns the images at those indices, so metrics that decode samples (label metrics) see the outside images."""

    images: torch.Tensor | None = None  # uint8 N×3×H×W for image inputs

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        return super().decode(codes) if self.images is None else self.images[codes.flatten().long().cpu()]


@dataclass
class OutsideRow:
    folder: Path
    values: dict[str, float]
    failed: dict[str, str]


def folder_name(label: str) -> str:
    """The folder of a row under ``outside/`` (the label with unsafe characters replaced, as cell ids are)."""
    return re.sub(r"[^A-Za-z0-9_.=,-]+", "-", label).lstrip(".") or "row"


def check_label(results: Path, bench: Benchmark, label: str) -> str:
    """The row's folder name; a ConfigError when ``label`` is empty or names an existing or planned row."""
    if not label.strip() or any(ch in label for ch in "\n\r\t"):
        raise ConfigError("--label", f"{label!r} is not a usable row name; give a short name such as ADM-G")
    rows = {variant.row for i, section in enumerate(bench.priors) for variant in expand_variants(section, f"priors[{i}]")}
    rows |= {read_json(p).get("row", "") for p in (results / "runs").glob("*/metrics.json")}
    taken = {record["row"]: record["cell"] for record in outside_records(results)}
    if label in rows or label in taken:
        where = f"an outside row ({taken[label]}/)" if label in taken else "a row of the benchmark"
        raise ConfigError(
            "--label", f"{label!r} is already {where} in {results}; choose another --label (or delete {OUTSIDE_DIR}/<label>/ to re-score)"
        )
    folder = folder_name(label)
    if (results / OUTSIDE_DIR / folder).exists():
        raise ConfigError("--label", f"{label!r} would be stored in {results / OUTSIDE_DIR / folder}, which another row uses; choose another --label")
    return folder


def results_benchmark(results: Path) -> tuple[Benchmark, dict[str, Any]]:
    """The benchmark as run and its protocol.json; a DataError when ``results`` is not a finished results folder."""
    if not (results / "results.json").is_file() or not (results / "protocol.json").is_file():
        raise DataError(f"{results}: no results.json/protocol.json here; give a results folder written by `vqbench run`")
    record = read_json(results / "results.json")
    bench = parse(Benchmark, record["benchmark"], "results.json:benchmark")
    bench.precision = record.get("precision", "fp32")
    protocol = read_json(results / "protocol.json")
    if protocol.get("features") is None:
        why = protocol.get("image_metrics_off") or "no image metric is enabled"
        raise DataError(f"{results}: this benchmark computes no image features ({why}); outside samples cannot be scored against it")
    return bench, protocol


def check_stats_unchanged(bench: Benchmark, protocol: dict[str, Any]) -> None:
    """The reference-statistics file the run used is still there, unchanged (its FID would otherwise differ)."""
    path, recorded = bench.metrics.reference_stats, (protocol.get("reference_stats") or {}).get("sha256")
    if path is None:
        return
    if not Path(path).expanduser().is_file():
        raise ConfigError("metrics.reference_stats", f"{path!r} (the run's FID statistics) not found; put it back to score outside samples")
    if recorded and sha256_file(Path(path).expanduser()) != recorded:
        raise ConfigError("metrics.reference_stats", f"{path} changed since the run (sha256 was {recorded[:12]}…); restore it or rerun the benchmark")


def _batches(images: torch.Tensor, bench: Benchmark) -> Iterator[torch.Tensor]:
    """Feature batches as a cell forms them: sampling batches, each split at metrics.batch_size."""
    for batch in images.split(bench.sampling.batch_size):
        yield from batch.split(bench.metrics.batch_size)


@dataclass
class Job:
    """Everything one outside row is scored from, checked and loaded."""

    results: Path
    label: str
    folder: str  # under outside/
    bench: Benchmark
    protocol: dict[str, Any]
    configured: dict[str, tuple[Any, Any]]
    given: OutsideSamples
    data: DataBundle
    reference: FeatureSet
    device: torch.device


def evaluate_outside(results: Path, samples: Path, label: str, regs: Registries, device_name: str = "auto") -> OutsideRow:
    """Score ``samples`` under ``results``' protocol and store the row in ``results/outside/<label>/``."""
    bench, protocol = results_benchmark(results)
    folder = check_label(results, bench, label)
    configured = metric_configs(bench.metrics, regs, image_sampling(bench))
    latents = protocol["latents"]
    given = read_samples(samples, bench.sampling.num_samples, tuple(latents["shape"]), latents["codebook_size"])
    check_stats_unchanged(bench, protocol)
    device = resolve_device(device_name)
    bench, data, cache = open_results(results, regs, device)  # may train what the cache lacks: not in inference mode
    reference = reference_features(bench, regs, data, cache, device)
    assert reference is not None and data.tokenizer is not None
    job = Job(results, label, folder, bench, protocol, configured, given, data, reference, device)
    with torch.inference_mode():
        images, record = _score(job)
        return _write_row(job, images, record)


def _score(job: Job) -> tuple[torch.Tensor, dict[str, Any]]:
    """(the images scored, the row's record): resize or decode, extract features, run the metrics that apply and mark
    the others n/a."""
    bench, data, given = job.bench, job.data, job.given
    images, codes, resized, size = _images(given, bench, data, job.device)
    n = len(images)
    prior = OutsidePrior(NoConfig(), data.codebook_size, data.latent_shape)
    ctx = OutsideContext(
        prior, data.tokenizer, data, codes if codes is not None else torch.arange(n).view(n, 1, 1), {}, 0, job.device,
        make_autocast(job.device, bench.precision), {}, bench.sampling.batch_size, precision=bench.precision,
        images=None if codes is not None else images,
    )  # fmt: skip
    ref = job.reference
    ctx.features = FeatureSet(ref.extractor, ref.real, lambda: _batches(images, bench), job.device, n, stats=ref.stats)
    applies = {k: pair for k, pair in job.configured.items() if k not in NOT_APPLICABLE and (pair[0].needs_images or codes is not None)}
    skipped = {k: NOT_APPLICABLE.get(k, "needs code grids (these samples are images)") for k in job.configured if k not in applies}
    values, columns = evaluate(ctx, applies)
    for name in skipped:  # every column of the protocol, n/a where it does not apply
        metric, config = job.configured[name]
        columns.update({col: {**asdict(meta), "group": metric.group} for col, meta in metric.columns(config).items()})
        values.update({col: math.nan for col in metric.columns(config)})
    order = [col for metric, config in job.configured.values() for col in metric.columns(config)]
    source = {
        "source": str(given.path.resolve()), "file": given.path.name, "kind": given.kind, "sha256": given.sha256, "npz_key": given.key,
        "samples_in_input": given.total, "samples_scored": n, "original_resolution": given.original_size(),
        "resolution": f"{size[1]}×{size[0]}", "resized": resized, "label": job.label,
        "evaluated": datetime.now(timezone.utc).isoformat(timespec="seconds"), "vqbench": __version__,
    }  # fmt: skip
    info = {
        "outside": source,
        "notes": ctx.notes,
        "not_applicable": skipped,
        "failed_metrics": ctx.failed,
        "protocol_key": protocol_key(job.protocol),
    }
    record = {
        "cell": f"{OUTSIDE_DIR}/{job.folder}", "label": job.label, "variant": "", "row": job.label, "seed": 0, "outside": True,
        "index": FIRST_INDEX + len(outside_records(job.results)), "values": values, "columns": {c: columns[c] for c in order},
        "column_order": order, "info": info,
    }  # fmt: skip
    return images, record


def _write_row(job: Job, images: torch.Tensor, record: dict[str, Any]) -> OutsideRow:
    """Write ``outside/<folder>/`` whole or not at all: the record, its provenance and the sample grid."""
    target = job.results / OUTSIDE_DIR / job.folder
    grid = job.bench.sampling.grid_size
    with atomic_path(target) as tmp:
        tmp.mkdir()
        write_json(tmp / PROVENANCE_FILE, record["info"]["outside"])
        write_json(tmp / RECORD_FILE, record)
        save_grid(tmp / "samples.png", images[: grid**2], grid, title=job.label)
    log.info("outside row %r stored in %s", job.label, target)
    return OutsideRow(target, record["values"], record["info"]["failed_metrics"])


def _images(
    given: OutsideSamples, bench: Benchmark, data: DataBundle, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor | None, bool, tuple[int, int]]:
    """(uint8 N×3×H×W images at the protocol's resolution, the codes or None, whether any image was resized, (H, W))."""
    tokenizer, autocast = data.tokenizer, make_autocast(device, bench.precision)
    codes = torch.from_numpy(given.codes) if given.codes is not None else None
    if codes is not None:  # decoded as a cell decodes its samples: sampling batches, the run's precision
        decoded = torch.cat([decode_batch(tokenizer, c, device, autocast) for c in codes.split(bench.sampling.batch_size)])
        arrays = list(decoded.permute(0, 2, 3, 1).numpy())
    else:
        assert given.images is not None
        arrays = given.images
    if bench.dataset is not None:
        size = (bench.dataset.resolution, bench.dataset.resolution)
    else:  # the reference images are decoded held-out latents: their size
        probe = decode_batch(tokenizer, data.test.tensor(slice(0, 1)), device, autocast)
        size = (int(probe.shape[-2]), int(probe.shape[-1]))
    fitted = [fit_resolution(a, *size) for a in arrays]
    resized = any(a.shape[:2] != size for a in arrays)
    images = torch.from_numpy(np.stack(fitted)).permute(0, 3, 1, 2)  # channels-last in memory, as decoded images are
    return images, codes, resized, size
