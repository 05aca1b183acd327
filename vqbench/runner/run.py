"""Orchestration: validate everything, then data → reference features → cells → report."""
from __future__ import annotations

import logging
import platform
from pathlib import Path
from typing import Any

import torch

from ..config import parse, to_dict
from ..errors import ConfigError, TrainingDiverged
from ..interfaces import LatentSource
from ..io import fingerprint, sha256_file, write_json
from ..metrics.features import FeatureSet, cached_features, extract_features
from ..plugins import Registries
from ..precision import make_autocast
from .cell import Cell, count_parameters, run_cell
from .data import DataBundle, decode_to_uint8, prepare_data
from .evaluate import metric_configs
from .schema import Benchmark, cell_id, expand_variants

log = logging.getLogger(__name__)


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device", "cuda was asked for but no CUDA device is available; use --device cpu or auto")
    return torch.device("cuda" if name == "cuda" or (name == "auto" and torch.cuda.is_available()) else "cpu")


def plan_cells(bench: Benchmark, regs: Registries) -> list[Cell]:
    """Every (prior, variant, seed); each variant's params are validated against the prior's Config here."""
    cells = []
    for i, section in enumerate(bench.priors):
        key = f"priors[{i}]"
        cls = regs.priors.get(section.name, f"{key}.name")
        for variant in expand_variants(section, key):
            parse(cls.Config, variant.params, f"{key}.params")
            cells.extend(Cell(cell_id(variant, seed), variant, seed, section, key) for seed in bench.seeds)
    for index, cell in enumerate(cells):
        cell.index = index
    return cells


def latent_geometry(bench: Benchmark, regs: Registries) -> tuple[tuple[int, int], int, int | None]:
    """(latent shape, codebook size, tokenizer parameter count) without data (models built on the meta device)."""
    from .. import latents as latent_io

    if bench.latents is not None:
        meta = latent_io.open(bench.latents.train, verify_checksum=False)
        return meta.latent_shape, meta.codebook_size, None
    source_cls = regs.datasets.get(bench.dataset.name, "dataset.name")
    if issubclass(source_cls, LatentSource):
        source = source_cls(parse(source_cls.Config, bench.dataset.params, "dataset.params"))
        return source.latent_shape, source.codebook_size, None
    tc = bench.tokenizer
    cls = regs.tokenizers.get(tc.name, "tokenizer.name")
    if tc.checkpoint is not None:
        tok = cls.load(tc.checkpoint, **({"config": tc.config} if tc.config else {}))
    else:
        with torch.device("meta"):
            tok = cls.from_preset(tc.preset, tc.params)
    return tok.latent_shape(bench.dataset.resolution), tok.codebook_size, count_parameters(tok)


def describe_plan(bench: Benchmark, regs: Registries) -> str:
    cells = plan_cells(bench, regs)
    metric_configs(bench.metrics, regs)
    shape, vocab, tok_params = latent_geometry(bench, regs)
    b = bench.budget
    lines = [
        f"benchmark {bench.name}: {len(cells)} cells",
        f"  data: {bench.dataset.name if bench.dataset else 'latents ' + bench.latents.train}" + (f" at {bench.dataset.resolution}²" if bench.tokenizer else ""),
        f"  tokenizer: {bench.tokenizer.name if bench.tokenizer else 'none'}"
        + (f" ({bench.tokenizer.preset or bench.tokenizer.checkpoint}, {tok_params / 1e6:.2f} M params)" if tok_params else ""),
        f"  latents: {shape[0]}×{shape[1]} = {shape[0] * shape[1]} tokens, {vocab} codes",
        f"  budget: {b.steps} steps × batch {b.batch_size}, lr {b.lr}" + (f", cap {b.max_minutes} min" if b.max_minutes else ""),
        f"  sampling: {bench.sampling.num_samples} samples, batch {bench.sampling.batch_size}; seeds {bench.seeds}",
        f"  metrics: {', '.join(bench.metrics.enabled)} (features: {bench.metrics.feature_extractor})",
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
    configured = metric_configs(bench.metrics, regs)
    if data.tokenizer is None or not any(metric.needs_images for metric, _ in configured.values()):
        return None
    m = bench.metrics
    extractor_cls = regs.feature_extractors.get(m.feature_extractor, "metrics.feature_extractor")
    extractor = extractor_cls(weights=m.feature_weights, allow_random=m.allow_random_features, seed=m.feature_seed, key="metrics")
    extractor.to(device).eval()
    n = min(m.num_real, len(data.test))
    content = data.source.fingerprint() if data.source is not None else data.test.meta["codes_sha256"]
    weights = sha256_file(m.feature_weights) if m.feature_weights else extractor.description
    key = fingerprint(m.feature_extractor, weights, data.reference_kind, content, data.test.meta["codes_sha256"], n)

    def compute() -> torch.Tensor:
        decode = lambda codes: decode_to_uint8(data.tokenizer, codes, device)  # noqa: E731
        batches = (images for images, _ in data.reference_batches(n, m.batch_size, decode))
        return extract_features(extractor, batches, device, n, "real features")

    real = cached_features(cache / "features" / f"{m.feature_extractor}-{key}.pt", compute)
    return FeatureSet(extractor, real, lambda: iter(()), device, 0)


def run_benchmark(bench: Benchmark, regs: Registries, out: Path | None = None, device_name: str | None = None) -> Path:
    """Run every cell not finished yet and write the report; returns the results folder."""
    from ..report import write_report

    cells = plan_cells(bench, regs)
    configured = metric_configs(bench.metrics, regs)
    preflight(bench, regs)  # bad input fails here, before anything is written
    device = resolve_device(device_name or bench.device)
    if bench.threads:
        torch.set_num_threads(bench.threads)
    out = Path(out or bench.out or Path("results") / bench.name)
    cache = Path(bench.cache or Path("results") / ".cache")
    out.mkdir(parents=True, exist_ok=True)
    _log_to(out / "run.log")
    autocast = make_autocast(device, bench.precision)
    data = prepare_data(bench, regs, cache, device, autocast)
    reference = reference_features(bench, regs, data, cache, device)
    write_json(out / "protocol.json", protocol(bench, data, reference, device))
    failures = {}
    for i, cell in enumerate(cells, 1):
        log.info("cell %d/%d: %s", i, len(cells), cell.id)
        try:
            status = run_cell(cell, bench, regs, data, configured, reference, out, cache, device, autocast)
            log.info("cell %s: %s", cell.id, status["status"])
        except TrainingDiverged as err:
            failures[cell.id] = str(err)
            log.error("cell %s stopped: %s", cell.id, err)
            write_json(cell.directory(out) / "failed.json", {"cell": cell.id, "error": str(err)})
    write_report(out)
    if failures:
        log.error("%d cell(s) failed: %s", len(failures), ", ".join(failures))
    return out


def protocol(bench: Benchmark, data: DataBundle, reference: FeatureSet | None, device: torch.device) -> dict[str, Any]:
    tok = bench.tokenizer
    return {
        "benchmark": bench.name,
        "dataset": None if bench.dataset is None else {"name": bench.dataset.name, "resolution": bench.dataset.resolution, "params": bench.dataset.params},
        "latents": {"shape": list(data.latent_shape), "codebook_size": data.codebook_size, "train": len(data.train), "test": len(data.test)},
        "tokenizer": None if tok is None else {"name": tok.name, "preset": tok.preset, "checkpoint": tok.checkpoint, "quality": data.tokenizer_info},
        "budget": to_dict(bench.budget),
        "sampling": to_dict(bench.sampling),
        "seeds": bench.seeds,
        "metrics": {k: v for k, v in to_dict(bench.metrics).items() if k != "settings"} | {"settings": bench.metrics.settings},
        "features": None if reference is None else {"description": reference.extractor.description, "real_weights": reference.extractor.real_weights, "num_real": len(reference.real), "reference": data.reference_kind},
        "image_metrics_off": data.image_metrics_off,
        "device": f"{device.type}" + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else f" ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"),
        "precision": bench.precision,
        "torch": torch.__version__,
    }


def _log_to(path: Path) -> None:
    root = logging.getLogger()
    if not any(isinstance(h, logging.FileHandler) and Path(h.baseFilename) == path.resolve() for h in root.handlers):
        handler = logging.FileHandler(path)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
    root.setLevel(min(root.level, logging.INFO) if root.level else logging.INFO)


def preflight(bench: Benchmark, regs: Registries) -> None:
    """Check every path and plugin name before anything is written."""
    plan_cells(bench, regs)
    metric_configs(bench.metrics, regs)
    checks = []
    if bench.tokenizer is not None:
        regs.tokenizers.get(bench.tokenizer.name, "tokenizer.name")
        checks += [("tokenizer.checkpoint", bench.tokenizer.checkpoint), ("tokenizer.config", bench.tokenizer.config)]
    if bench.latents is not None:
        checks += [("latents.train", bench.latents.train), ("latents.test", bench.latents.test)]
    checks.append(("metrics.feature_weights", bench.metrics.feature_weights))
    for key, path in checks:
        if path is not None and not Path(path).expanduser().exists():
            raise ConfigError(key, f"{path!r} does not exist")
    regs.feature_extractors.get(bench.metrics.feature_extractor, "metrics.feature_extractor")
    if bench.dataset is not None and bench.latents is None:
        source_cls = regs.datasets.get(bench.dataset.name, "dataset.name")
        if issubclass(source_cls, LatentSource):
            if bench.tokenizer is not None:
                raise ConfigError("tokenizer", f"dataset '{bench.dataset.name}' generates codes directly; remove the tokenizer section")
            source_cls(parse(source_cls.Config, bench.dataset.params, "dataset.params"))
            return
        if bench.tokenizer is None:
            raise ConfigError("tokenizer", f"image dataset '{bench.dataset.name}' needs a tokenizer: give `preset` (train one) or `checkpoint`")
        source_cls(parse(source_cls.Config, bench.dataset.params, "dataset.params"), bench.dataset.resolution).check("dataset.params")
