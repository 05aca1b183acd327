"""Orchestration: validate everything, then data → reference features → cells → report."""

from __future__ import annotations

import contextlib
import logging
import platform
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from .. import distributed
from ..config import to_dict
from ..errors import TrainingDiverged
from ..io import check_writable_folder, fingerprint, read_json, save_torch, sha256_file, write_json
from ..metrics.features import FeatureSet, cached_features, extract_features, extract_features_split
from ..metrics.lpips_net import lpips_protocol
from ..metrics.reference_stats import check_identity, extractor_identity, load_reference_stats, stats_protocol
from ..plugins import Registries
from ..precision import make_autocast, resolve_precision
from ..provenance import STALE_ENTRIES, code_digest, code_keyed, provenance, reuse_stale
from .cell import run_cell
from .claims import Claim, claim_cell
from .data import DataBundle, decode_to_uint8, prepare_data
from .evaluate import image_sampling, metric_configs, reference_split
from .leftovers import sweep
from .logfile import log_to
from .memory import probe_training_memory
from .plan import describe_plan, in_shard, latent_geometry, plan_cells, preflight, resolve_device
from .schema import Benchmark

__all__ = ["describe_plan", "in_shard", "latent_geometry", "plan_cells", "preflight", "resolve_device", "run_benchmark"]
log = logging.getLogger(__name__)


def reference_features(bench: Benchmark, regs: Registries, data: DataBundle, cache: Path, device: torch.device) -> FeatureSet | None:
    configured = metric_configs(bench.metrics, regs, image_sampling(bench))
    if data.tokenizer is None or not any(metric.wants_images for metric, _ in configured.values()):
        return None
    m = bench.metrics
    extractor_cls = regs.feature_extractors.get(m.feature_extractor, "metrics.feature_extractor")
    extractor = extractor_cls(weights=m.feature_weights, allow_random=m.allow_random_features, seed=m.feature_seed, key="metrics")
    world = distributed.world()
    for rank_group in (True, False):  # rank 0 first (it trains and caches what the extractor needs), then the others
        if world.main == rank_group:
            extractor.prepare(data, cache, device, key="metrics")
        distributed.barrier()
    extractor.to(device).eval()
    n = reference_split(m, configured, len(data.test))  # the first n held-out items; inpainting takes the last ones
    content = data.source.fingerprint() if data.source is not None else data.test.meta["codes_sha256"]
    weights = sha256_file(m.feature_weights) if m.feature_weights else extractor.description + extractor.weights_key
    code = code_digest(extractor, extract_features, core=False)
    key = fingerprint(m.feature_extractor, weights, data.reference_kind, content, data.test.meta["codes_sha256"], n)
    path = code_keyed(cache / "features", f"{m.feature_extractor}-{key}", code, ".pt")
    tokenizer = data.tokenizer
    decode = lambda codes: decode_to_uint8(tokenizer, codes, device)  # noqa: E731

    def batches(mine: Sequence[int]) -> Iterator[torch.Tensor]:
        return (images for images, _ in data.reference_batches(n, m.batch_size, decode, batches=mine))

    if distributed.broadcast(path.is_file()):  # only rank 0 evaluates, so only rank 0 reads the real features
        real = cached_features(path, lambda: torch.zeros(0)) if world.main else torch.zeros(0, extractor.dims, dtype=torch.float64)
    else:  # every rank extracts its share of the batches; rank 0 gathers and stores them
        gathered = extract_features_split(extractor, batches, data.reference_batch_count(n, m.batch_size), device, n, "real features")
        real = gathered if gathered is not None else torch.zeros(0, extractor.dims, dtype=torch.float64)
        if world.main:
            save_torch(path, {"features": real})
    distributed.barrier()
    stats = None
    if m.reference_stats is not None:  # checked in preflight; again here, against the network as prepared
        stats = load_reference_stats(m.reference_stats, extractor.dims)
        check_identity(stats, extractor_identity(m.feature_extractor, extractor))
    return FeatureSet(extractor, real, lambda: iter(()), device, 0, stats=stats)


@dataclass
class RunOutcome:
    """Where the results went and what did not finish."""

    out: Path
    failures: dict[str, str] = field(default_factory=dict)  # cell id → why it (or one of its metrics) failed
    elsewhere: dict[str, str] = field(default_factory=dict)  # cell id → the job computing it (claimed)

    def summary(self) -> str:
        others = f"; {len(self.elsewhere)} cell(s) left to other jobs ({', '.join(self.elsewhere)})" if self.elsewhere else ""
        if not self.failures:
            return f"all cells of this job finished{others}; results in {self.out}/"
        return f"{len(self.failures)} cell(s) with failures ({', '.join(self.failures)}){others}; see {self.out}/report.md"


def run_benchmark(
    bench: Benchmark, regs: Registries, out: Path | None = None, device_name: str | None = None, shard: tuple[int, int] | None = None
) -> RunOutcome:
    """Run every cell not finished yet (of shard i of N: plan positions ≡ i mod N) and write the report. Each cell is
    claimed first, so jobs sharing ``out`` never compute the same cell (see ``claims``)."""
    from ..report import write_report

    cells = plan_cells(bench, regs)
    configured = metric_configs(bench.metrics, regs, image_sampling(bench))
    preflight(bench, regs)  # bad input fails here, before anything is written
    device = resolve_device(device_name or bench.device)
    world = distributed.init_from_env(device.type)  # under torchrun: join the other ranks (rank 0 writes)
    if world.active and device.type == "cuda":
        device = torch.device("cuda", torch.cuda.current_device())
    requested = bench.precision
    precision, precision_reason = resolve_precision(requested, device)
    bench_as_given, bench = bench, replace(bench, precision=precision)  # caches and cells see the precision used
    if bench.threads:
        torch.set_num_threads(bench.threads)
    out = Path(out or bench.out or Path("results") / bench.name)
    cache = Path(bench.cache or Path("results") / ".cache")
    if world.main:  # before the first file: a results or cache path that cannot be written is bad input
        check_writable_folder(out, "out (--out)")
        check_writable_folder(cache, "cache")
    shape, vocab, _ = latent_geometry(bench, regs)
    mine = [cell for cell in cells if in_shard(cell.index, shard)]
    probe_training_memory(bench, regs, mine, (shape, vocab), device, world.size)  # a batch that cannot fit: exit 2 now
    out.mkdir(parents=True, exist_ok=True)
    outcome = RunOutcome(out)
    with log_to(out / "run.log") if world.main else contextlib.nullcontext(), reuse_stale(bench.reuse_stale):
        if world.main:
            sweep(out, cache)
        log.info("device %s, precision %s (%s)%s", device, precision, precision_reason, f", {world.size} ranks" if world.active else "")
        if world.main:
            write_json(
                out / "results.json",
                provenance(device) | {"benchmark": to_dict(bench_as_given), "precision": precision, "started": _now(), "ranks": world.size},
            )
        autocast = make_autocast(device, bench.precision)
        data = prepare_data(bench, regs, cache, device, autocast)
        reference = reference_features(bench, regs, data, cache, device)
        distributed.barrier()
        if world.main:
            write_json(
                out / "protocol.json",
                protocol(bench, data, reference, device)
                | {
                    "precision_reason": precision_reason,
                    "precision_requested": requested,
                    "metric_settings": {name: to_dict(config) for name, (_, config) in configured.items()},
                    "lpips": lpips_protocol(configured),
                    "reference_stats": stats_protocol(reference.stats if reference is not None else None, configured),
                    "reuse_stale": bench.reuse_stale,
                    "stale_entries": [Path(entry).name for entry in STALE_ENTRIES],
                },
            )
        for i, cell in enumerate(cells, 1):
            if not in_shard(cell.index, shard):
                continue
            log.info("cell %d/%d: %s", i, len(cells), cell.id)
            with _claim(cell.directory(out), world) as claim:
                if not claim.held:
                    log.info("cell %s is being computed by %s (heartbeat %.0f s ago): left to it", cell.id, claim.owner, claim.age)
                    outcome.elsewhere[cell.id] = claim.owner
                    continue
                try:
                    status = run_cell(cell, bench, regs, data, configured, reference, out, cache, device, autocast)
                    log.info("cell %s: %s", cell.id, status["status"])
                    if status.get("failed_metrics"):
                        outcome.failures[cell.id] = "metrics failed: " + ", ".join(status["failed_metrics"])
                except TrainingDiverged as err:
                    outcome.failures[cell.id] = str(err)
                    log.error("cell %s stopped: %s", cell.id, err)
                    if world.main:
                        write_json(cell.directory(out) / "failed.json", {"cell": cell.id, "error": str(err)})
        if world.main:
            write_report(out)
            results = read_json(out / "results.json")
            write_json(out / "results.json", results | {"finished": _now(), "failures": outcome.failures})
            (log.error if outcome.failures else log.info)(outcome.summary())
        distributed.barrier()
    return outcome


@contextlib.contextmanager
def _claim(folder: Path, world: distributed.World) -> Iterator[Claim]:
    """Claim a cell for this job: rank 0 holds the claim, every rank learns its outcome."""
    if not world.main:
        yield distributed.broadcast(Claim(False))
        return
    with claim_cell(folder) as claim:
        yield distributed.broadcast(claim)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def protocol(bench: Benchmark, data: DataBundle, reference: FeatureSet | None, device: torch.device) -> dict[str, Any]:
    tok = bench.tokenizer
    return {
        "benchmark": bench.name,
        "dataset": None
        if bench.dataset is None
        else {"name": bench.dataset.name, "resolution": bench.dataset.resolution, "params": bench.dataset.params},
        "latents": {"shape": list(data.latent_shape), "codebook_size": data.codebook_size, "train": len(data.train), "test": len(data.test)},
        "tokenizer": None if tok is None else {"name": tok.name, "preset": tok.preset, "checkpoint": tok.checkpoint, "quality": data.tokenizer_info},
        "budget": to_dict(bench.budget),
        "sampling": to_dict(bench.sampling),
        "seeds": bench.seeds,
        "metrics": {k: v for k, v in to_dict(bench.metrics).items() if k != "settings"} | {"settings": bench.metrics.settings},
        "features": None
        if reference is None
        else {
            "description": reference.extractor.description,
            "real_weights": reference.extractor.real_weights,
            "num_real": len(reference.real),
            "reference": data.reference_kind,
        },
        "image_metrics_off": data.image_metrics_off,
        "claims": [to_dict(claim) for claim in bench.claims],
        "device": f"{device.type}"
        + (
            f" ({torch.cuda.get_device_name(device)})"
            if device.type == "cuda"
            else f" ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
        ),
        "precision": bench.precision,
        "torch": torch.__version__,
    }
