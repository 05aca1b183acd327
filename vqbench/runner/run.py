"""Orchestration: validate everything, then data → reference features → cells → report."""

from __future__ import annotations

import contextlib
import functools
import logging
import platform
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, fields, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from .. import distributed
from ..config import parse, required, to_dict
from ..errors import ConfigError, DataError, TrainingDiverged
from ..interfaces import LatentSource, Prior
from ..io import check_writable_folder, fingerprint, read_json, save_torch, sha256_file, write_json
from ..metrics.features import FeatureSet, cached_features, extract_features, extract_features_split
from ..metrics.lpips_net import lpips_weights_label
from ..plugins import Registries
from ..precision import make_autocast, resolve_precision
from ..provenance import STALE_ENTRIES, code_digest, code_keyed, provenance, reuse_stale
from ..verdicts import check_claims
from .cell import Cell, count_parameters, run_cell
from .claims import Claim, claim_cell
from .data import DataBundle, decode_to_uint8, prepare_data, split_indices, trainable
from .evaluate import image_sampling, metric_configs, reference_split
from .memory import probe_training_memory
from .schema import Benchmark, cell_id, expand_variants

log = logging.getLogger(__name__)


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device", "cuda was asked for but no CUDA device is available; use --device cpu or auto")
    return torch.device("cuda" if name == "cuda" or (name == "auto" and torch.cuda.is_available()) else "cpu")


def plan_cells(bench: Benchmark, regs: Registries) -> list[Cell]:
    """Every (prior, variant, seed); each variant's params are validated against the prior's Config here."""
    cells: list[Cell] = []
    for i, section in enumerate(bench.priors):
        key = f"priors[{i}]"
        cls = regs.priors.get(section.name, f"{key}.name")
        for variant in expand_variants(section, key):
            config: Any = parse(cls.Config, variant.params, f"{key}.params")
            check_sampling(cls, config, section.sampling, f"{key}.sampling")
            cells.extend(Cell(cell_id(variant, seed), variant, seed, section, key) for seed in bench.seeds)
    for index, cell in enumerate(cells):
        cell.index = index
    return cells


def check_sampling(cls: type[Prior], config: Any, sampling: dict[str, Any], key: str) -> None:
    """Parse ``priors[].sampling`` against the prior's sampler settings before any work (typos, types, ranges)."""
    if not sampling:
        return
    if cls.sampler_config is None:
        raise ConfigError(key, f"this prior has no sampler settings, got {sorted(sampling)}; remove `sampling`")
    base = {f.name: getattr(config, f.name) for f in fields(cls.sampler_config)}
    parse(cls.sampler_config, {**base, **sampling}, key)


def latent_geometry(bench: Benchmark, regs: Registries) -> tuple[tuple[int, int], int, int | None]:
    """(latent shape, codebook size, tokenizer parameter count) without data (models built on the meta device)."""
    from .. import latents as latent_io

    if bench.latents is not None:
        meta = latent_io.open(bench.latents.train, verify_checksum=False)
        return meta.latent_shape, meta.codebook_size, None
    ds = required(bench.dataset, "dataset")
    source_cls = regs.datasets.get(ds.name, "dataset.name")
    if issubclass(source_cls, LatentSource):
        source = source_cls(parse(source_cls.Config, ds.params, "dataset.params"))
        return source.latent_shape, source.codebook_size, None
    tc = required(bench.tokenizer, "tokenizer")
    cls = regs.tokenizers.get(tc.name, "tokenizer.name")
    if tc.checkpoint is not None:
        tok = cls.load(tc.checkpoint, **({"config": tc.config} if tc.config else {}))
    else:
        with torch.device("meta"):
            tok = trainable(cls, tc.name).from_preset(tc.preset or "", tc.params)
    return tok.latent_shape(ds.resolution), tok.codebook_size, count_parameters(tok)


def in_shard(index: int, shard: tuple[int, int] | None) -> bool:
    """Whether the cell at plan position ``index`` (from 0) belongs to shard (i, N): positions ≡ i mod N."""
    return shard is None or index % shard[1] == shard[0]


def describe_plan(bench: Benchmark, regs: Registries, shard: tuple[int, int] | None = None, missing: Sequence[str] = ()) -> str:
    """The plan of exactly the cells this job would run (its shard), with inputs that are not on disk yet."""
    every = plan_cells(bench, regs)
    cells = [cell for cell in every if in_shard(cell.index, shard)]
    try:
        device = resolve_device(bench.device)
        precision, why = resolve_precision(bench.precision, device)
        device_line = f"  device: {device.type}, precision {precision} ({why})"
    except ConfigError:  # planning a GPU benchmark on a machine without one
        device_line = f"  device: {bench.device} (not available here), precision {bench.precision}"
    metric_configs(bench.metrics, regs, image_sampling(bench))
    shape, vocab, tok_params = latent_geometry(bench, regs)
    b = bench.budget
    data_line = (
        f"  data: {bench.dataset.name} at {bench.dataset.resolution}²"
        if bench.dataset
        else f"  data: latents {required(bench.latents, 'latents').train}"
    )
    tok = bench.tokenizer
    lines = [
        f"benchmark {bench.name}: {len(cells)} cells" + (f" (shard {shard[0]}/{shard[1]} of {len(every)} cells)" if shard else ""),
        data_line,
        f"  tokenizer: {tok.name if tok else 'none'}"
        + (f" ({tok.preset or tok.checkpoint}, {tok_params / 1e6:.2f} M params)" if tok and tok_params else ""),
        f"  latents: {shape[0]}×{shape[1]} = {shape[0] * shape[1]} tokens, {vocab} codes",
        f"  budget: {b.steps} steps × batch {b.batch_size}, lr {b.lr}" + (f", cap {b.max_minutes} min" if b.max_minutes else ""),
        f"  sampling: {bench.sampling.num_samples} samples, batch {bench.sampling.batch_size}; seeds {bench.seeds}",
        f"  metrics: {', '.join(bench.metrics.enabled)} (features: {bench.metrics.feature_extractor})",
        device_line,
        *(f"  not on disk (a real run stops here): {gap}" for gap in missing),
        "  cells:",
    ]
    for cell in cells:
        with torch.device("meta"):
            prior = _meta_prior(cell, regs, shape, vocab)
        lines.append(f"    {cell.id:<48} {cell.section.name:<14} {count_parameters(prior) / 1e6:9.3f} M params")
    return "\n".join(lines)


def _meta_prior(cell: Cell, regs: Registries, shape: tuple[int, int], vocab: int):
    cls = regs.priors.get(cell.section.name)
    return cls(parse(cls.Config, cell.variant.params, f"{cell.key}.params"), vocab, shape, 0)


def reference_features(bench: Benchmark, regs: Registries, data: DataBundle, cache: Path, device: torch.device) -> FeatureSet | None:
    configured = metric_configs(bench.metrics, regs, image_sampling(bench))
    if data.tokenizer is None or not any(metric.needs_images for metric, _ in configured.values()):
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
    return FeatureSet(extractor, real, lambda: iter(()), device, 0)


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
    probe_training_memory(bench, regs, cells, (shape, vocab), device, world.size)  # a batch that cannot fit: exit 2 now
    out.mkdir(parents=True, exist_ok=True)
    outcome = RunOutcome(out)
    with _log_to(out / "run.log") if world.main else contextlib.nullcontext(), reuse_stale(bench.reuse_stale):
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
                    log.info("cell %s is being computed by %s: left to it", cell.id, claim.owner)
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


def lpips_protocol(configured: dict[str, tuple[Any, Any]]) -> str | None:
    """How the inpainting metric's LPIPS backbone is initialised (None without that metric)."""
    for _, config in configured.values():
        if hasattr(config, "lpips_net"):
            return lpips_weights_label(config.lpips_net, getattr(config, "lpips_weights", None))
    return None


@contextlib.contextmanager
def _log_to(path: Path) -> Iterator[None]:
    """Log into ``path`` for the duration of one benchmark (the handler is removed afterwards, so the benchmarks of
    a multi-document file each keep their own log)."""
    root = logging.getLogger()
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    previous = root.level
    root.setLevel(min(root.level, logging.INFO) if root.level else logging.INFO)
    try:
        yield
    finally:
        root.removeHandler(handler)
        handler.close()
        root.setLevel(previous)


def preflight(bench: Benchmark, regs: Registries, plan_only: bool = False) -> list[str]:
    """Check every setting, path and plugin name before anything is written. With ``plan_only`` (a dry run) inputs
    missing on disk are returned as lines instead of stopping the check; every other error still stops it."""
    cells = plan_cells(bench, regs)
    configured = metric_configs(bench.metrics, regs, image_sampling(bench))
    directions = {name: col.direction for metric, config in configured.values() for name, col in metric.columns(config).items()}
    check_claims(bench.claims, list(dict.fromkeys(cell.variant.row for cell in cells)), directions)
    for i, claim in enumerate(bench.claims):
        if claim.metric == "val_nll_mean" and bench.budget.eval_every is None:
            raise ConfigError(f"claims[{i}].metric", "val_nll_mean needs validation curves: set budget.eval_every")
    missing: list[str] = []

    def on_disk(check: Callable[[], None]) -> bool:
        try:
            check()
        except (ConfigError, DataError) as err:
            if not plan_only:
                raise
            missing.append(str(err))
            return False
        return True

    checks = []
    if bench.tokenizer is not None:
        tok_cls = regs.tokenizers.get(bench.tokenizer.name, "tokenizer.name")
        if bench.tokenizer.checkpoint is None:
            trainable(tok_cls, bench.tokenizer.name)
            check_tokenizer_settings(tok_cls, bench.tokenizer)
        checks += [("tokenizer.checkpoint", bench.tokenizer.checkpoint), ("tokenizer.config", bench.tokenizer.config)]
    if bench.latents is not None:
        checks += [("latents.train", bench.latents.train), ("latents.test", bench.latents.test)]
    checks.append(("metrics.feature_weights", bench.metrics.feature_weights))
    for key, path in checks:
        if path is not None:
            on_disk(functools.partial(_exists, key, path))
    regs.feature_extractors.get(bench.metrics.feature_extractor, "metrics.feature_extractor")
    if bench.dataset is not None and bench.latents is None:
        source_cls = regs.datasets.get(bench.dataset.name, "dataset.name")
        if issubclass(source_cls, LatentSource):
            if bench.tokenizer is not None:
                raise ConfigError("tokenizer", f"dataset '{bench.dataset.name}' generates codes directly; remove the tokenizer section")
            source_cls(parse(source_cls.Config, bench.dataset.params, "dataset.params"))
            return missing
        if bench.tokenizer is None:
            raise ConfigError("tokenizer", f"image dataset '{bench.dataset.name}' needs a tokenizer: give `preset` (train one) or `checkpoint`")
        source = source_cls(parse(source_cls.Config, bench.dataset.params, "dataset.params"), bench.dataset.resolution)
        if on_disk(lambda: source.check("dataset.params")) and any(metric.needs_images for metric, _ in configured.values()):
            _, test_idx = split_indices(len(source), bench.dataset.test_fraction, bench.dataset.split_seed)
            reference_split(bench.metrics, configured, len(test_idx))  # reference and inpainting images fit the split
    return missing


def check_tokenizer_settings(cls: type, section: Any) -> None:
    """Parse the tokenizer's architecture overrides and training settings as training will (no weights built)."""
    tok_cls = trainable(cls, section.name)
    train_defaults = tok_cls.preset_training.get(section.preset or "", {})
    parse(tok_cls.TrainConfig, {**train_defaults, **section.train}, "tokenizer.train")
    with torch.device("meta"):
        tok_cls.from_preset(section.preset or "", section.params)


def _exists(key: str, path: str) -> None:
    if not Path(path).expanduser().exists():
        raise ConfigError(key, f"{path!r} does not exist")
