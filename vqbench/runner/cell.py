"""One cell (prior × variant × seed): train or fit, sample with timing, evaluate, write outputs."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import checkpoints, distributed
from .. import nn as vqbench_nn
from .. import sampling as vqbench_sampling
from ..checkpoints import PRIOR_FILE_FORMAT
from ..config import parse, to_dict
from ..errors import DataError
from ..flops import prior_flops
from ..images import grid, save_grid, save_inpainting_strip, tile_scale
from ..interfaces import Prior
from ..io import atomic_path, fingerprint, load_torch, read_json, save_torch, write_json, write_text
from ..metrics.features import FeatureSet
from ..metrics.lpips_net import lpips_protocol
from ..plugins import Registries
from ..precision import compile_networks, inference_weights
from ..provenance import code_digest, code_keyed, package_versions
from ..report import flatten
from ..tracking import NO_TRACKING, CellInfo, Tracking, finite_metrics, hparams, open_tracking
from ..training import StepLoop
from .data import DataBundle
from .evaluate import EvalContext, evaluate, generate_samples, sampling_labels
from .logfile import log_to
from .schema import Benchmark, PriorSection, Variant
from .train import CURVE_FILE, log_curve, read_curve, train_prior

log = logging.getLogger(__name__)


@dataclass
class Cell:
    id: str
    variant: Variant
    seed: int
    section: PriorSection
    key: str  # config key path of the prior section, e.g. priors[1]
    index: int = 0  # position in the benchmark's plan (report rows follow it)

    def directory(self, out: Path) -> Path:
        return out / "runs" / self.id


def build_prior(cell: Cell, regs: Registries, data: DataBundle, device: torch.device | str | None = "cpu") -> Prior:
    cls = regs.priors.get(cell.section.name, f"{cell.key}.name")
    config: Any = parse(cls.Config, cell.variant.params, f"{cell.key}.params")
    num_classes = int(data.train.labels[:, 0].max()) + 1 if data.train.labels is not None and len(data.train) else 0
    prior = cls(config, data.codebook_size, data.latent_shape, num_classes)
    prior.prepare(data.train.tensor())
    return prior if device is None else prior.to(device)


def count_parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def cell_protocol(
    cell: Cell, bench: Benchmark, regs: Registries, data: DataBundle, metrics: dict[str, tuple[Any, Any]], reference: FeatureSet | None
) -> dict[str, Any]:
    """Everything that determines a cell's numbers: resolved prior, training budget, sampling, metric settings, data,
    tokenizer and reference features, precision, package versions and a digest of the code involved."""
    with torch.device("meta"):
        prior = build_prior(cell, regs, data, device=None)
    versions = package_versions()
    protocol = {
        "prior": {"name": cell.section.name, "params": prior.describe(), "sampling": cell.section.sampling, "lr": cell.section.lr if cell.section.lr is not None else bench.budget.lr},
        "seed": cell.seed, "budget": asdict(bench.budget), "sampling": asdict(bench.sampling), "precision": bench.precision, "compile": bench.compile,
        "metrics": to_dict(bench.metrics),
        "data": {"train": data.train.meta.get("codes_sha256"), "test": data.test.meta.get("codes_sha256"), "tokenizer": (data.train.meta.get("tokenizer") or {}).get("checkpoint_sha256")},
        "reference": None if reference is None else {"description": reference.extractor.description, "count": len(reference.real)}
        | ({"stats_sha256": reference.stats.sha256} if reference.stats is not None else {}),
        "versions": {k: versions[k] for k in ("vqbench", "torch", "torch-fidelity", "lpips", "numpy")},
        "lpips": lpips_protocol(metrics),
        "code": code_digest(prior, *(type(metric) for metric, _ in metrics.values()), *([reference.extractor] if reference else [])),
    }  # fmt: skip
    if cell.section.checkpoint is not None:  # the file's weights, not a training budget, determine the numbers
        protocol |= {"budget": None, "loaded": loaded_identity(cell)}
    return protocol


def protocol_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Dotted keys whose values differ between two cell protocols."""
    a, b = flatten(old), flatten(new)
    return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))


def run_cell(
    cell: Cell,
    bench: Benchmark,
    regs: Registries,
    data: DataBundle,
    metrics: dict[str, tuple[Any, Any]],
    reference: FeatureSet | None,
    out: Path,
    cache: Path,
    device: torch.device,
    autocast: Callable[[], Any],
) -> dict[str, Any]:
    """Run one cell. A finished cell is skipped only when its stored protocol fingerprint matches the current one;
    otherwise it is recomputed (the differing keys are logged)."""
    folder = cell.directory(out)
    protocol = cell_protocol(cell, bench, regs, data, metrics, reference)
    world = distributed.world()
    if distributed.broadcast(world.main and _finished(cell, folder, protocol, bench.reuse_stale)):  # rank 0 decides for every rank
        return {"status": "skipped"}
    if not world.main:
        return _run(cell, bench, regs, data, metrics, reference, folder, cache, device, autocast)
    folder.mkdir(parents=True, exist_ok=True)
    with log_to(folder / "log.txt"), open_tracking(bench.tracking, regs, tracked_cell(cell, bench, out)) as tracking:
        result = _run(cell, bench, regs, data, metrics, reference, folder, cache, device, autocast, tracking)
        record = result.pop("record")
        write_json(folder / "metrics.json", record | {"protocol": protocol, "fingerprint": fingerprint(protocol)})
        if tracking:
            tracking.log_final(hparams(flatten(read_json(folder / "config.json"))), finite_metrics(record["values"]))
        return result


def tracked_cell(cell: Cell, bench: Benchmark, out: Path) -> CellInfo:
    """What the trackers are told of a cell when it starts."""
    lr = cell.section.lr if cell.section.lr is not None else bench.budget.lr
    settings = {"prior": cell.section.name, "label": cell.variant.label, "variant": cell.variant.name, "params": cell.variant.params, "lr": lr}
    return CellInfo(bench.name, cell.id, cell.variant.row, cell.seed, out, settings | {"budget": asdict(bench.budget)})


def _finished(cell: Cell, folder: Path, protocol: dict[str, Any], reuse_stale: bool = False) -> bool:
    """True when the cell's stored results were computed under ``protocol`` (with ``reuse_stale``: under it up to the
    code digest; the cell is then marked ``stale_code``); otherwise any stale result is removed."""
    if not (folder / "metrics.json").is_file():
        return False
    stored = read_json(folder / "metrics.json")
    retry = sorted((stored.get("info") or {}).get("failed_metrics") or {})
    if stored.get("fingerprint") == fingerprint(protocol) and not retry:
        log.info("cell %s already finished: skipped", cell.id)
        if stored.get("stale_code"):  # the code is back to what computed it
            write_json(folder / "metrics.json", {k: v for k, v in stored.items() if k != "stale_code"})
        return True
    if reuse_stale and not retry and protocol_changes(stored.get("protocol") or {}, protocol) == ["code"]:
        log.warning("cell %s was computed by other code (%s, now %s): kept (--reuse-stale)", cell.id, stored["protocol"]["code"], protocol["code"])
        if stored.get("stale_code") != stored["protocol"]["code"]:
            write_json(folder / "metrics.json", stored | {"stale_code": stored["protocol"]["code"]})
        return True
    if retry:
        log.info("cell %s: metrics %s failed last time: recomputing", cell.id, ", ".join(retry))
    changed = protocol_changes(stored.get("protocol") or {}, protocol)
    if changed:
        shown = ", ".join(changed[:8]) + (" …" if len(changed) > 8 else "")
        log.warning("cell %s was computed under other settings (%s): recomputing", cell.id, shown)
    (folder / "metrics.json").unlink()
    return False


def training_key(prior: Prior, lr: float, bench: Benchmark, seed: int, data: DataBundle) -> tuple[str, str]:
    """Everything that determines the trained weights; sampler-only settings are left out, so variants that differ
    only in how they sample (e.g. the absorbing and MaskGIT samplers) share one training run. Returns (fingerprint of
    the settings, digest of the code), which name the cache entry ``<prior>-<settings>-<code>.pt``."""
    params = prior.describe()
    if prior.sampler_config is not None:
        for f in fields(prior.sampler_config):
            params.pop(f.name, None)
    code = code_digest(prior, vqbench_nn, vqbench_sampling, train_prior, StepLoop, core=False)
    ranks = [{"ranks": distributed.world().size}] if distributed.world().active else []  # rank r > 0 draws its own noise
    return fingerprint(type(prior).__name__, params, lr, asdict(bench.budget), seed, bench.precision, data.train.meta["codes_sha256"], *ranks), code


def train_or_reuse(
    prior: Prior, cell: Cell, bench: Benchmark, data: DataBundle, lr: float, folder: Path, cache: Path, device, autocast,
    tracking: Tracking = NO_TRACKING,
) -> dict[str, Any]:  # fmt: skip
    """Train (resumably) unless an identical training run is in the cache; store the result there for reuse (its
    curve goes to ``tracking`` as if trained now)."""
    started = time.monotonic()
    if cell.section.checkpoint is not None:
        return load_trained(prior, cell, device)
    if not prior.trainable:
        prior.fit(data.train.tensor().to(device))
        return {"steps": 0, "train_minutes": (time.monotonic() - started) / 60, "final_loss": float("nan")}
    settings, code = training_key(prior, lr, bench, cell.seed, data)
    shared = code_keyed(cache / "priors", f"{cell.section.name}-{settings}", code, ".pt", lambda p: _stored_curve(p) is not None)
    main = distributed.world().main
    cached = main and shared.is_file()
    if distributed.broadcast(cached):  # every rank reads the shared cache
        state = load_torch(shared, map_location=device)
        curve = _stored_curve(shared, state)
        if curve is None:
            log.warning("trained-prior cache entry %s has no training curve (an older entry): retrained", shared)
        else:
            prior.load_state_dict(state["state_dict"])
            log.info("trained weights reused from %s (same prior, data, budget and seed)", shared)
            if main:
                write_text(folder / CURVE_FILE, curve)
                log_curve(tracking, *read_curve(curve), lr, bench.budget.warmup_steps)
            stale = {"stale_training": shared.name} if not shared.stem.endswith(code) else {}  # --reuse-stale took another code's
            return {**state["info"], "reused_training": shared.name, "training": shared.stem, **stale}
    info = train_prior(
        prior, data.train, bench.budget, lr, cell.seed, folder / "train_state.pt", device, autocast, validation=data.test, tracking=tracking
    )
    if main:  # weights and curve in one file: an entry is whole or absent
        curve_text = (folder / CURVE_FILE).read_text() if (folder / CURVE_FILE).is_file() else ""
        save_torch(shared, {"state_dict": prior.state_dict(), "info": info, "curve": curve_text})
    return {**info, "training": shared.stem}


def load_trained(prior: Prior, cell: Cell, device: torch.device) -> dict[str, Any]:
    """Load the weights of ``priors[].checkpoint`` (checked against the benchmark in preflight) instead of training."""
    section = cell.section.checkpoint
    assert section is not None
    loaded = checkpoints.load(section.path, section.format, f"{cell.key}.checkpoint", section.config)
    checkpoints.load_weights(prior, loaded, f"{cell.key}.checkpoint")
    prior.to(device)
    log.info("trained weights loaded from %s (sha256 %s…); the training budget does not apply", loaded.path, loaded.sha256[:12])
    return {"steps": 0, "train_minutes": 0.0, "final_loss": float("nan"), "loaded": loaded_identity(cell)}


def loaded_identity(cell: Cell) -> dict[str, str] | None:
    """File name, format and content digest of a row's checkpoint (None for a row vqbench trains)."""
    section = cell.section.checkpoint
    if section is None:
        return None
    loaded = checkpoints.load(section.path, section.format, f"{cell.key}.checkpoint", section.config)
    identity = {"file": Path(loaded.path).name, "format": section.format, "sha256": loaded.sha256}
    if loaded.config_sha256 is not None and section.config is not None:
        identity |= {"config": Path(section.config).name, "config_sha256": loaded.config_sha256}
    return identity


def _stored_curve(entry: Path, state: dict[str, Any] | None = None) -> str | None:
    """The training curve (CSV text) of a trained-prior cache entry: stored in the entry (or, for entries written
    before curves moved into them, in the ``.csv`` beside it); None when it has neither."""
    beside = entry.with_suffix(".csv")
    if beside.is_file():
        return beside.read_text()
    try:
        curve = (state if state is not None else load_torch(entry)).get("curve")
    except DataError:  # a damaged entry counts as incomplete
        return None
    return curve if isinstance(curve, str) else None


def _run(cell, bench, regs, data, metrics, reference, folder, cache, device, autocast, tracking: Tracking = NO_TRACKING) -> dict[str, Any]:
    torch.manual_seed(cell.seed)
    prior = build_prior(cell, regs, data, device)
    if bench.compile:
        log.info("compiled networks: %s", ", ".join(compile_networks(prior)) or "none")
    lr = cell.section.lr if cell.section.lr is not None else bench.budget.lr
    resolved = {
        "prior": cell.section.name, "label": cell.variant.label, "variant": cell.variant.name, "seed": cell.seed,
        "params": prior.describe(), "sampling": cell.section.sampling, "lr": lr, "budget": asdict(bench.budget),
        "parameters": count_parameters(prior), "latent_shape": list(data.latent_shape), "codebook_size": data.codebook_size,
    }  # fmt: skip
    main = distributed.world().main
    if main:
        write_json(folder / "config.json", resolved)
    info = train_or_reuse(prior, cell, bench, data, lr, folder, cache, device, autocast, tracking)
    if main:  # loadable elsewhere as priors[].checkpoint (format vqbench)
        save_torch(
            folder / "prior.pt",
            {"format": PRIOR_FILE_FORMAT, "prior": cell.section.name, "config": to_dict(prior.config), "state_dict": prior.state_dict(),
             "latent_shape": list(data.latent_shape), "codebook_size": data.codebook_size, "num_classes": prior.num_classes},
        )  # fmt: skip
    prior.eval()
    with inference_weights(prior, bench.precision):  # sampling and every metric run at the benchmark's precision
        evaluated = _sample_and_evaluate(prior, cell, bench, data, metrics, reference, folder, device, autocast, tracking, int(info["steps"]))
    if evaluated is None:  # a rank other than 0: its share of the sampling is done, rank 0 evaluates
        return {"status": "done", "values": {}, "failed_metrics": []}
    values, columns, ctx = evaluated
    if ctx.artifacts:
        save_inpainting_strip(folder / "inpainting.png", ctx.artifacts, title=f"{cell.variant.row}, seed {cell.seed}: inpainting")
    info |= {
        "parameters": count_parameters(prior),
        "flops": count_flops(prior, cell, bench, data, device),
        "supports": prior.supports,
        "notes": ({"training": prior.training_note} if prior.training_note else {}) | ctx.notes,
        "timing": ctx.timing,
        "failed_metrics": ctx.failed,
    }
    record = {
        "cell": cell.id, "label": cell.variant.label, "variant": cell.variant.name, "row": cell.variant.row, "seed": cell.seed, "index": cell.index,
        "values": values, "columns": columns, "column_order": list(columns), "info": info,
    }  # fmt: skip
    return {
        "status": "done" if not ctx.failed else "done with failed metrics",
        "values": values,
        "record": record,
        "failed_metrics": sorted(ctx.failed),
    }


def count_flops(prior: Prior, cell: Cell, bench: Benchmark, data: DataBundle, device: torch.device) -> dict[str, float]:
    """Training-loss and sampling GFLOPs per grid (``vqbench.flops``); empty when counting fails (logged)."""
    labels = sampling_labels(bench.sampling, data, 1)
    try:
        with torch.no_grad():
            grid = data.test.tensor([0]).to(device)
            gen = torch.Generator(device=device).manual_seed(cell.seed)
            return prior_flops(prior, grid, labels.to(device) if labels is not None else None, gen, cell.section.sampling)
    except Exception as err:  # noqa: BLE001 - a count is a report extra, never a reason to fail the cell
        log.warning("FLOPs of %s not counted (%s: %s)", cell.id, type(err).__name__, err)
        return {}


def _sample_and_evaluate(prior, cell, bench, data, metrics, reference, folder, device, autocast, tracking=NO_TRACKING, step=0):
    """Sampling, samples.npy and samples.png (and the trackers' samples image at ``step``), then every metric (sample
    time is measured by its metric)."""
    labels = sampling_labels(bench.sampling, data, bench.sampling.num_samples)
    extract = None
    if reference is not None and data.tokenizer is not None:
        extractor, size = reference.extractor, bench.metrics.batch_size
        extract = lambda images: torch.cat([extractor(x.to(device)) for x in images.split(size)])  # noqa: E731
    drawn = generate_samples(
        prior, data.tokenizer, bench.sampling.num_samples, bench.sampling.batch_size, cell.seed, device, autocast,
        cell.section.sampling, labels, extract=extract,
    )  # fmt: skip
    if not distributed.world().main:
        return None
    samples, images, timing = drawn.codes, drawn.images, drawn.info
    with atomic_path(folder / "samples.npy") as tmp, open(tmp, "wb") as handle:
        np.save(handle, samples.numpy().astype(np.int32))
    ctx = EvalContext(
        prior, data.tokenizer, data, samples, timing, cell.seed, device, autocast, cell.section.sampling, bench.sampling.batch_size,
        precision=bench.precision, sample_labels=labels,
    )  # fmt: skip
    if reference is not None and data.tokenizer is not None:
        ctx.features = FeatureSet(
            reference.extractor, reference.real, lambda: (images.split(bench.metrics.batch_size) if images is not None else _decoded(ctx, samples)),
            device, len(samples), drawn.features, stats=reference.stats,
        )  # fmt: skip
        shown = images if images is not None else ctx.decode(samples[: bench.sampling.grid_size**2])
        save_grid(folder / "samples.png", shown, bench.sampling.grid_size, title=f"{cell.variant.row}, seed {cell.seed}")
    if tracking and data.tokenizer is not None:  # the samples grid as in samples.png (decoded here when that was not made)
        side = bench.sampling.grid_size
        if reference is None:
            shown = images if images is not None else ctx.decode(samples[: side**2])
        scale = tile_scale(shown)
        tracking.log_image(step, "samples", grid(shown[: side**2], side).repeat(scale, 0).repeat(scale, 1))
    values, columns = evaluate(ctx, metrics)
    return values, columns, ctx


def _decoded(ctx: EvalContext, samples: torch.Tensor):
    for codes in samples.split(ctx.batch_size):
        yield ctx.decode(codes)
