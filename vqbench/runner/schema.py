"""The benchmark YAML schema, validated key by key (unknown keys get a did-you-mean)."""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from ..config import in_unit_interval, parse, positive, set_dotted, unshared, yaml_syntax_error
from ..errors import ConfigError, DataError
from ..registry import did_you_mean
from ..tracking import check_tracking
from ..verdicts import ClaimSection

DEFAULT_METRICS = ["fid", "kid", "prdc", "nll", "latent_stats", "sample_time", "inpainting"]


@dataclass
class DatasetSection:
    name: str
    resolution: int = 32
    params: dict[str, Any] = field(default_factory=dict)
    test_fraction: float = 0.1
    split_seed: int = 0

    def validate(self, key: str) -> None:
        positive(key, "resolution", self.resolution)
        in_unit_interval(key, "test_fraction", self.test_fraction)


@dataclass
class TokenizerSection:
    name: str = "vqgan"
    preset: str | None = None  # train this architecture preset ...
    params: dict[str, Any] = field(default_factory=dict)  # ... with these architecture overrides
    train: dict[str, Any] = field(default_factory=dict)
    checkpoint: str | None = None  # ... or load a trained tokenizer
    config: str | None = None  # its YAML (taming checkpoints) or hparams file (unleashing checkpoints)
    format: Literal["vqbench", "taming", "unleashing"] | None = None  # of the checkpoint; None: detected from the file
    seed: int = 0

    def validate(self, key: str) -> None:
        if (self.preset is None) == (self.checkpoint is None):
            raise ConfigError(key, "give exactly one of `preset` (train a tokenizer) or `checkpoint` (load one)")
        if self.format is not None and self.checkpoint is None:
            raise ConfigError(f"{key}.format", "is the format of tokenizer.checkpoint; give a checkpoint or remove format")

    def load_options(self) -> dict[str, Any]:
        """Keyword options of the tokenizer's ``load`` for ``checkpoint``: its ``config`` and ``format``, where given."""
        return {name: value for name, value in (("config", self.config), ("format", self.format)) if value}


@dataclass
class LatentsSection:
    """Start from existing latent datasets instead of images."""

    train: str
    test: str


@dataclass
class CheckpointSection:
    """A prior trained elsewhere: its weights are loaded instead of trained (``vqbench.checkpoints``)."""

    path: str
    format: str = "vqbench"  # a results folder's runs/<cell>/prior.pt
    config: str | None = None  # the model's config file, for formats that keep it apart


@dataclass
class PriorSection:
    name: str
    label: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    sweep: dict[str, list[Any]] = field(default_factory=dict)  # dotted keys into params → values; cartesian product
    lr: float | None = None  # overrides budget.lr for this prior
    sampling: dict[str, Any] = field(default_factory=dict)  # extra options passed to sample()/inpaint()
    checkpoint: CheckpointSection | None = None  # load trained weights: no training, the budget does not apply
    match_params: str | None = None  # another row's name: backbone.dim is set so the parameter counts match

    def validate(self, key: str) -> None:
        for dotted, values in self.sweep.items():
            if not values:
                raise ConfigError(f"{key}.sweep.{dotted}", "needs at least one value")
        if self.checkpoint is not None and self.lr is not None:
            raise ConfigError(f"{key}.lr", "a prior loaded from a checkpoint is not trained; remove lr")
        if self.checkpoint is not None and self.match_params is not None:
            raise ConfigError(f"{key}.match_params", "a prior loaded from a checkpoint has its size; remove match_params")


@dataclass
class BudgetSection:
    steps: int = 1000
    batch_size: int = 32
    lr: float = 3e-4
    weight_decay: float = 0.0
    warmup_steps: int = 0
    grad_clip: float | None = 1.0
    max_minutes: float | None = None  # wall-clock cap per cell
    checkpoint_every: int = 250
    eval_every: int | None = None  # held-out NLL every this many steps (train_curve.csv, validation curve plot)
    eval_grids: int = 256  # held-out grids in each of those evaluations

    def validate(self, key: str) -> None:
        for name in ("steps", "batch_size", "lr", "checkpoint_every", "eval_grids"):
            positive(key, name, getattr(self, name))
        positive(key, "max_minutes", self.max_minutes)
        positive(key, "eval_every", self.eval_every)


@dataclass
class SamplingSection:
    num_samples: int = 256
    batch_size: int = 64
    grid_size: int = 8  # samples per side of the PNG grid
    class_labels: list[int] | None = None  # class-conditional sampling cycles through these (default: held-out labels)

    def validate(self, key: str) -> None:
        positive(key, "num_samples", self.num_samples)
        positive(key, "batch_size", self.batch_size)
        positive(key, "grid_size", self.grid_size)


@dataclass
class MetricsSection:
    enabled: list[str] = field(default_factory=lambda: list(DEFAULT_METRICS))
    feature_extractor: str = "inception-v3-compat"
    feature_weights: str | None = None
    allow_random_features: bool = False  # offline: seeded random feature network, labelled in the report
    feature_seed: int = 0
    num_real: int = 1000  # held-out real images for the reference statistics
    batch_size: int = 32
    reference_stats: str | None = None  # npz of real-feature mu/sigma (`vqbench export --format fid-stats`, pytorch-fid): FID only
    settings: dict[str, dict[str, Any]] = field(default_factory=dict)  # per-metric settings (from metrics.<name>)
    # resamples of each cell's samples for FID/KID/PRDC intervals (vqbench.metrics.bootstrap); 0: off, and then left out
    # of to_dict, so cells computed before the option keep their protocol fingerprint
    bootstrap: int = field(default=0, metadata={"omit_default": True})

    def validate(self, key: str) -> None:
        if self.bootstrap < 0:
            raise ConfigError(f"{key}.bootstrap", f"must be 0 (off) or a number of resamples, got {self.bootstrap}")


@dataclass
class Benchmark:
    name: str
    priors: list[PriorSection]
    dataset: DatasetSection | None = None
    tokenizer: TokenizerSection | None = None
    latents: LatentsSection | None = None
    seeds: list[int] = field(default_factory=lambda: [0])
    budget: BudgetSection = field(default_factory=BudgetSection)
    sampling: SamplingSection = field(default_factory=SamplingSection)
    metrics: MetricsSection = field(default_factory=MetricsSection)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto: bf16 where the device runs it natively
    threads: int | None = None
    claims: list[ClaimSection] = field(default_factory=list)  # papers' claims checked in the report (see vqbench.verdicts)
    compile: bool = False  # torch.compile the priors' networks (every training and sampling step calls them)
    out: str | None = None  # default results/<name>
    cache: str | None = None  # default results/.cache
    reuse_stale: bool = False  # keep caches and finished cells computed by other code (`--reuse-stale`; in the report)
    tracking: str | list[str] | None = None  # experiment trackers (e.g. tensorboard): curves, samples, final metrics per cell

    def validate(self, key: str) -> None:
        if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", self.name):
            raise ConfigError(
                "name",
                f"a benchmark name is one folder name of letters, digits, '_', '-', '.' (not starting with '.'), got {self.name!r}; "
                "choose the results folder with `out:` or --out",
            )
        if not self.priors:
            raise ConfigError("priors", "list at least one prior")
        if self.latents is None and self.dataset is None:
            raise ConfigError("dataset", "give `dataset` (+ `tokenizer` for images) or `latents` (existing code grids)")
        if not self.seeds:
            raise ConfigError("seeds", "list at least one seed")
        for i, seed in enumerate(self.seeds):
            if seed < 0:
                raise ConfigError(f"seeds[{i}]", f"must be non-negative, got {seed}")
        labels = [p.label or p.name for p in self.priors]
        dupes = {label for label in labels if labels.count(label) > 1}
        if dupes:
            raise ConfigError("priors", f"labels must be unique; {sorted(dupes)} repeat (set `label:` on each)")


def split_metric_settings(data: dict[str, Any], metric_names: list[str]) -> dict[str, Any]:
    """Move ``metrics.<metric name>: {...}`` blocks into ``metrics.settings``."""
    metrics = dict(data.get("metrics") or {})
    settings = dict(metrics.pop("settings", {}) or {})
    for name in list(metrics):
        if name in metric_names:
            settings[name] = metrics.pop(name) or {}
    metrics["settings"] = settings
    return {**data, "metrics": metrics}


def load_yaml(path: str | Path) -> list[dict[str, Any]]:
    """The benchmarks in a YAML file: one per document (``---`` separates several)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: benchmark file not found")
    try:
        text = path.read_text(encoding="utf-8")
        documents = [d for d in yaml.safe_load_all(text) if d is not None]
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 text (byte {err.start}); save the benchmark file as UTF-8") from None
    except yaml.YAMLError as err:  # one line, as compilers write it: <file>:<line>:<column>: <problem>
        line, column, problem = yaml_syntax_error(err, text)
        raise DataError(f"{path}:{line}:{column}: {problem}") from None
    if not documents or not all(isinstance(d, dict) for d in documents):
        raise DataError(f"{path}: expected a mapping at the top level of every document")
    return documents


def parse_benchmark(data: dict[str, Any], metric_names: list[str], overrides: Sequence[tuple[str, Any]] = ()) -> Benchmark:
    data = unshared(data)  # every anchored or merged place its own object, so an override stays where it is put
    for dotted, value in overrides:
        set_dotted(data, dotted, value)
    data = split_metric_settings(data, metric_names)
    bench = parse(Benchmark, data)
    for name in bench.metrics.enabled:
        if name not in metric_names:
            raise ConfigError("metrics.enabled", f"unknown metric '{name}'{did_you_mean(name, metric_names)} (known: {', '.join(metric_names)})")
    check_tracking(bench.tracking)
    return bench


@dataclass(frozen=True)
class Variant:
    """One point of a prior's sweep: its params and a short name like ``resample=2d,rotary=1d``."""

    label: str
    name: str
    params: dict[str, Any]

    @property
    def row(self) -> str:
        return f"{self.label} [{self.name}]" if self.name else self.label


def expand_variants(prior: PriorSection, key: str) -> list[Variant]:
    label = prior.label or prior.name
    if not prior.sweep:
        return [Variant(label, "", unshared(prior.params))]
    keys = list(prior.sweep)
    variants = []
    for values in itertools.product(*(prior.sweep[k] for k in keys)):
        params = unshared(prior.params)
        for dotted, value in zip(keys, values):
            set_dotted(params, dotted, unshared(value))  # each variant its own copy: a later key must not reach another
        name = ",".join(f"{k.split('.')[-1]}={_short(v)}" for k, v in zip(keys, values))
        variants.append(Variant(label, name, params))
    return variants


def _short(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip().replace(" ", "")


def cell_id(variant: Variant, seed: int) -> str:
    raw = f"{variant.label}__{variant.name}__seed{seed}" if variant.name else f"{variant.label}__seed{seed}"
    return re.sub(r"[^A-Za-z0-9_.=,-]+", "-", raw)
