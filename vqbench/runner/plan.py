"""The plan of a benchmark without running it: its cells, its latent geometry, every check before the first write
(``preflight``) and the dry run's description."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import torch

from .. import checkpoints
from ..config import parse, required
from ..errors import ConfigError, DataError
from ..interfaces import LatentSource, Prior
from ..metrics.reference_stats import benchmark_stats
from ..plugins import Registries
from ..precision import resolve_precision
from ..tracking import check_tracking
from ..verdicts import check_claims
from .cell import Cell, count_parameters
from .claims import timing as claim_timing
from .data import split_indices, trainable
from .evaluate import image_sampling, metric_configs, reference_split
from .matching import match_sizes
from .schema import Benchmark, PriorSection, cell_id, expand_variants


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device", "cuda was asked for but no CUDA device is available; use --device cpu or auto")
    return torch.device("cuda" if name == "cuda" or (name == "auto" and torch.cuda.is_available()) else "cpu")


def plan_cells(bench: Benchmark, regs: Registries) -> list[Cell]:
    """Every (prior, variant, seed); each variant's params are validated against the prior's Config here."""
    cells: list[Cell] = []
    variants = {i: expand_variants(section, f"priors[{i}]") for i, section in enumerate(bench.priors)}
    if any(section.match_params is not None for section in bench.priors):
        match_sizes(bench, regs, variants, latent_geometry(bench, regs)[:2])
    for i, section in enumerate(bench.priors):
        key = f"priors[{i}]"
        cls = regs.priors.get(section.name, f"{key}.name")
        for variant in variants[i]:
            if section.checkpoint is not None:  # the architecture comes from the file; sampler settings may be set
                variant = replace(variant, params=loaded_params(cls, section, variant.params, key))
            config: Any = parse(cls.Config, variant.params, f"{key}.params")
            check_sampling(cls, config, section.sampling, f"{key}.sampling")
            cells.extend(Cell(cell_id(variant, seed), variant, seed, section, key) for seed in bench.seeds)
    for index, cell in enumerate(cells):
        cell.index = index
    return cells


def loaded_params(cls: type[Prior], section: PriorSection, params: dict[str, Any], key: str) -> dict[str, Any]:
    """The params of a row loaded from ``section.checkpoint``: the file's config, with ``params`` allowed to set only
    sampler settings (the weights fix everything else)."""
    assert section.checkpoint is not None
    loaded = checkpoints.load(section.checkpoint.path, section.checkpoint.format, f"{key}.checkpoint", section.checkpoint.config)
    checkpoints.check_prior(loaded, section.name, f"{key}.checkpoint")
    sampler = sorted(f.name for f in fields(cls.sampler_config)) if cls.sampler_config is not None else []
    fixed = sorted(set(params) - set(sampler))
    if fixed:
        raise ConfigError(
            f"{key}.params.{fixed[0]}", f"fixed by the checkpoint {loaded.path}; only sampler settings may be set ({', '.join(sampler) or 'none'})"
        )
    return {**loaded.config, **params}


def check_loaded_priors(bench: Benchmark, regs: Registries, latent_shape: tuple[int, int], codebook_size: int) -> None:
    """Every prior loaded from a checkpoint fits the benchmark's latents, and its weights fit the prior it describes
    (built on the meta device: keys and shapes are checked, nothing is allocated)."""
    for i, section in enumerate(bench.priors):
        if section.checkpoint is not None:
            key = f"priors[{i}].checkpoint"
            loaded = checkpoints.load(section.checkpoint.path, section.checkpoint.format, key, section.checkpoint.config)
            checkpoints.check_fits(loaded, latent_shape, codebook_size, key)
            cls = regs.priors.get(section.name, f"priors[{i}].name")
            with torch.device("meta"):
                prior = cls(parse(cls.Config, loaded.config, f"{key}.path"), codebook_size, latent_shape, loaded.num_classes)
            checkpoints.load_weights(prior, loaded, key, assign=True)  # meta tensors replaced by references: no copy


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
        tok = cls.load(tc.checkpoint, **tc.load_options())
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
    geometry = _geometry_if_known(bench, regs, bool(missing))
    shape, vocab, tok_params = geometry if geometry is not None else ((0, 0), 0, None)
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
        f"  latents: {shape[0]}×{shape[1]} = {shape[0] * shape[1]} tokens, {vocab} codes"
        if geometry is not None
        else "  latents: unknown until the inputs listed below are on disk",
        f"  budget: {b.steps} steps × batch {b.batch_size}, lr {b.lr}" + (f", cap {b.max_minutes} min" if b.max_minutes else ""),
        f"  sampling: {bench.sampling.num_samples} samples, batch {bench.sampling.batch_size}; seeds {bench.seeds}",
        f"  metrics: {', '.join(bench.metrics.enabled)} (features: {bench.metrics.feature_extractor})",
        device_line,
        *(f"  not on disk (a real run stops here): {gap}" for gap in missing),
        "  cells:",
    ]
    for cell in cells:
        if geometry is None:
            lines.append(f"    {cell.id:<48} {cell.section.name:<14}")
            continue
        with torch.device("meta"):
            prior = _meta_prior(cell, regs, shape, vocab)
        lines.append(f"    {cell.id:<48} {cell.section.name:<14} {count_parameters(prior) / 1e6:9.3f} M params")
    return "\n".join(lines)


def _geometry_if_known(bench: Benchmark, regs: Registries, inputs_missing: bool) -> tuple[tuple[int, int], int, int | None] | None:
    """``latent_geometry``, or None when it needs an input that a dry run listed as not on disk."""
    try:
        return latent_geometry(bench, regs)
    except (ConfigError, DataError):
        if not inputs_missing:
            raise
        return None


def _meta_prior(cell: Cell, regs: Registries, shape: tuple[int, int], vocab: int):
    cls = regs.priors.get(cell.section.name)
    return cls(parse(cls.Config, cell.variant.params, f"{cell.key}.params"), vocab, shape, 0)


def preflight(bench: Benchmark, regs: Registries, plan_only: bool = False) -> list[str]:
    """Check every setting, path and plugin name before anything is written. With ``plan_only`` (a dry run) inputs
    missing on disk are returned as lines instead of stopping the check; every other error still stops it."""
    claim_timing()  # VQBENCH_CLAIM_* are read before the first claim is made, which is after the first write
    cells = plan_cells(bench, regs)
    configured = metric_configs(bench.metrics, regs, image_sampling(bench))
    directions = {name: col.direction for metric, config in configured.values() for name, col in metric.columns(config).items()}
    check_claims(bench.claims, list(dict.fromkeys(cell.variant.row for cell in cells)), directions)
    check_tracking(bench.tracking, regs)
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
    extractor_cls = regs.feature_extractors.get(bench.metrics.feature_extractor, "metrics.feature_extractor")
    if any(section.checkpoint is not None for section in bench.priors):
        on_disk(lambda: check_loaded_priors(bench, regs, *latent_geometry(bench, regs)[:2]))
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
        if on_disk(lambda: source.check("dataset.params")) and any(metric.wants_images for metric, _ in configured.values()):
            _, test_idx = split_indices(len(source), bench.dataset.test_fraction, bench.dataset.split_seed)
            reference_split(bench.metrics, configured, len(test_idx))  # reference and inpainting images fit the split
    if bench.tokenizer is not None and any(metric.wants_images for metric, _ in configured.values()):
        m = bench.metrics

        def build_extractor() -> None:  # its weights file opens and fits the network (meta tensors: no memory, no init)
            with torch.device("meta"):
                extractor_cls(weights=m.feature_weights, allow_random=m.allow_random_features, seed=m.feature_seed, key="metrics")

        on_disk(build_extractor)
        if m.reference_stats is not None and on_disk(functools.partial(_exists, "metrics.reference_stats", m.reference_stats)):
            benchmark_stats(m, extractor_cls)  # FID's statistics file fits the feature network (identity, dimensions)
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
