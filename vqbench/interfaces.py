"""The interfaces plugins implement: tokenizers, backbones, priors, image sources, metrics, feature extractors."""

from __future__ import annotations

import dataclasses
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol

import numpy as np
import torch
from torch import nn

from .errors import ConfigError

if TYPE_CHECKING:
    from .metrics.features import FeatureSet
    from .runner.data import DataBundle

log = logging.getLogger(__name__)


@dataclass
class NoConfig:
    """Config for plugins without parameters."""


class Tokenizer(nn.Module, ABC):
    """Images ↔ code grids. Images are float B×3×H×W in [-1, 1]; codes are LongTensor B×h×w."""

    Config: ClassVar[type] = NoConfig
    codebook_size: int
    downsample_factor: int
    trained_resolution: int | None = None  # image side it was trained at (saved with it), when known

    @abstractmethod
    def encode(self, images: torch.Tensor) -> torch.Tensor: ...

    @abstractmethod
    def decode(self, codes: torch.Tensor) -> torch.Tensor: ...

    def latent_shape(self, image_size: int | tuple[int, int]) -> tuple[int, int]:
        h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
        f = self.downsample_factor
        if h % f or w % f:
            raise ValueError(f"image size {h}×{w} is not a multiple of the downsample factor {f}")
        return h // f, w // f

    @abstractmethod
    def config_dict(self) -> dict[str, Any]:
        """Everything needed to rebuild the architecture (stored in latent meta and checkpoints)."""

    def save(self, path: str | Path) -> None:
        from .io import save_torch

        save_torch(path, {"config": self.config_dict(), "state_dict": self.state_dict(), "trained_resolution": self.trained_resolution})

    @classmethod
    @abstractmethod
    def load(cls, path: str | Path, **options: Any) -> Tokenizer: ...


class TrainableTokenizer(Tokenizer):
    """A tokenizer a benchmark can train from a named preset (``tokenizer: {preset: tiny, train: {...}}``).

    The runner calls ``from_preset(preset, overrides)`` (on the meta device too, to plan), merges
    ``preset_training[preset]`` with the benchmark's ``tokenizer.train`` into ``TrainConfig``, then ``fit`` (resumable
    from ``checkpoint``) and ``save``."""

    TrainConfig: ClassVar[type] = NoConfig
    presets: ClassVar[dict[str, dict[str, Any]]] = {}
    preset_training: ClassVar[dict[str, dict[str, Any]]] = {}  # per preset: defaults for TrainConfig

    @classmethod
    @abstractmethod
    def from_preset(cls, preset: str, overrides: dict[str, Any] | None = None, key: str = "tokenizer") -> TrainableTokenizer:
        """A fresh, untrained model of a named architecture, ``overrides`` merged in (errors name ``key`` paths)."""

    @classmethod
    @abstractmethod
    def fit(
        cls, model: TrainableTokenizer, source: ImageSource, indices: np.ndarray, config: Any, *, checkpoint: Path,
        seed: int, device: torch.device | str = "cpu", autocast: Callable[[], Any] | None = None,
    ) -> dict[str, Any]:  # fmt: skip
        """Train ``model`` in place on ``source[indices]``; resume from ``checkpoint`` if present; return statistics."""


class Backbone(nn.Module, ABC):
    """A network mapping codes (B×N) plus optional class labels to logits (B×N×V).

    Constructed as ``cls(config, vocab_size, num_logits, latent_shape, num_classes=0, causal=False)``: ``vocab_size``
    input tokens (codes plus any special tokens a prior adds), ``num_logits`` output classes, raster order over
    ``latent_shape``. A backbone that can run causally subclasses ``CausalBackbone``."""

    Config: ClassVar[type] = NoConfig
    supports_causal: ClassVar[bool] = False
    causal: bool = False

    @abstractmethod
    def forward(self, codes: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor: ...

    def logits_at(self, codes: torch.Tensor, rows: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """The logits (K×V) of the K positions where ``rows`` (B×N, bool) is True, in row-major order: exactly
        ``self(codes, labels)[rows]``. Samplers that draw only some positions call this; a backbone overrides it to
        skip the work the other positions' logits would take (the conformance suite checks the equality)."""
        return self(codes, labels)[rows]


class CausalBackbone(Backbone):
    """A backbone that also runs causally (built with ``causal=True``): position i sees positions ≤ i only, and
    decoding can reuse a key/value cache.

    ``forward(codes, labels, cache=cache, offset=i)`` returns the logits of positions ``offset … offset+t`` for tokens
    ``codes`` (B×t), appending their keys/values to ``cache`` (a ``vqbench.nn.KVCache``; None recomputes). Decoding
    with the cache must equal the full causal forward (the conformance suite checks it)."""

    supports_causal: ClassVar[bool] = True

    @abstractmethod
    def forward(self, codes: torch.Tensor, labels: torch.Tensor | None = None, cache: Any = None, offset: int = 0) -> torch.Tensor: ...


class Prior(nn.Module, ABC):
    """An objective and sampler over code grids. ``keep_mask`` True means: keep the given code."""

    Config: ClassVar[type] = NoConfig
    sampler_config: ClassVar[type | None] = None  # the dataclass of Config's sampler-only fields (no effect on training)
    net: nn.Module  # the backbone, when the prior has one (``describe`` reports its resolved config)
    nll_note: str | None = None  # how the last ``nll`` was computed (e.g. "ELBO, exact sum over 16 time steps"); reported
    training_note: str | None = None  # how the training budget is spent, where not obvious (e.g. split across scales); reported
    supports_inpainting: ClassVar[bool] = False
    supports_likelihood: ClassVar[bool] = False
    trainable: ClassVar[bool] = True  # False: fitted in closed form by ``fit``

    def __init__(self, config: Any, codebook_size: int, latent_shape: tuple[int, int], num_classes: int = 0):
        super().__init__()
        self.config = config
        self.codebook_size = codebook_size
        self.latent_shape: tuple[int, int] = (int(latent_shape[0]), int(latent_shape[1]))
        self.num_classes = num_classes
        self.last_nfe = 0  # network evaluations per sample spent by the last ``sample``/``inpaint`` call

    @property
    def device(self) -> torch.device:
        """Where the prior's parameters (or buffers) live; CPU for a prior with neither."""
        for tensor in (*self.parameters(), *self.buffers()):
            return tensor.device
        return torch.device("cpu")

    @property
    def supports(self) -> dict[str, bool]:
        return {"inpainting": self.supports_inpainting, "likelihood": self.supports_likelihood}

    def sampler(self, **overrides: Any) -> Any:
        """The sampler settings: the config's ``sampler_config`` fields with per-call overrides, validated."""
        from .config import parse

        if self.sampler_config is None:
            if overrides:
                raise ConfigError("sampling", f"{type(self).__name__} has no sampler settings, got {sorted(overrides)}")
            return None
        base = {f.name: getattr(self.config, f.name) for f in dataclasses.fields(self.sampler_config)}
        return parse(self.sampler_config, {**base, **overrides}, "sampling")

    def check_shape(self, latent_shape: tuple[int, int]) -> None:
        if tuple(latent_shape) != self.latent_shape:
            raise ValueError(f"this prior was built for {self.latent_shape} latents, asked for {tuple(latent_shape)}")

    @abstractmethod
    def loss(self, codes: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Training loss (scalar) on a batch of codes B×h×w."""

    @abstractmethod
    def sample(
        self, n: int, latent_shape: tuple[int, int], generator: torch.Generator, labels: torch.Tensor | None = None, **opts: Any
    ) -> torch.Tensor:
        """``n`` code grids (LongTensor n×h×w)."""

    def inpaint(
        self, codes: torch.Tensor, keep_mask: torch.Tensor, generator: torch.Generator, labels: torch.Tensor | None = None, **opts: Any
    ) -> torch.Tensor:
        """Regenerate the tokens where ``keep_mask`` is False; kept tokens must come back unchanged."""
        raise NotImplementedError(f"{type(self).__name__} does not support inpainting")

    def nll(self, codes: torch.Tensor, generator: torch.Generator | None = None, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Negative log-likelihood (or an upper bound) per grid, in bits per token (shape B)."""
        raise NotImplementedError(f"{type(self).__name__} has no tractable likelihood")

    def fit(self, codes: torch.Tensor) -> None:
        """Closed-form fit on all training codes (only for ``trainable = False`` priors)."""
        raise NotImplementedError

    def prepare(self, train_codes: torch.Tensor) -> None:
        """Called once with every training grid right after construction, before training or loading weights: for
        settings derived from the data (e.g. a code remapping). The default does nothing."""
        return None

    @classmethod
    def with_width(cls, params: dict[str, Any], width: int) -> dict[str, Any] | None:
        """``params`` with the network's width set to ``width`` (``priors[].match_params``), or None when the prior has
        no width to set. The default sets ``backbone.dim`` (the Config's default backbone if ``params`` names none)."""
        from .config import parse, to_dict, unshared

        backbone = getattr(parse(cls.Config, params, "params"), "backbone", None)
        if not isinstance(backbone, dict):
            return None
        return {**unshared(params), "backbone": {**to_dict(backbone), "dim": width}}

    def describe(self) -> dict[str, Any]:
        """Every resolved parameter (defaults filled in, the backbone's too), as stored in config.json and reported."""
        from .config import to_dict

        params = to_dict(self.config)
        net = getattr(self, "net", None)
        if isinstance(params.get("backbone"), dict) and isinstance(net, Backbone):
            params["backbone"] = {"name": params["backbone"].get("name", type(net).__name__.lower()), **to_dict(net.config)}
        return params


class ImageSource(ABC):
    """An indexable set of RGB images (uint8 H×W×3) at one resolution, with optional integer labels."""

    Config: ClassVar[type] = NoConfig
    label_names: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config: Any, resolution: int):
        self.config = config
        self.resolution = resolution
        self.skipped: set[int] = set()  # indices of unreadable images met so far

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def image(self, index: int) -> np.ndarray: ...

    def labels(self) -> np.ndarray | None:
        return None

    @abstractmethod
    def fingerprint(self) -> str:
        """Identifies the content (cache key for tokenizers, latents and real-image features)."""

    def check(self, key: str) -> None:  # noqa: B027 - optional hook, a no-op by default
        """Fail before any work if the source is unusable (missing folder, ...)."""

    def batch(self, indices: list[int] | np.ndarray) -> tuple[torch.Tensor, list[int]]:
        """Float B×3×H×W in [-1, 1] for the readable images among ``indices``, and those indices.

        An image whose file cannot be decoded (``OSError``) is skipped, logged and counted in ``skipped``.
        """
        arrays, kept = [], []
        for index in (int(i) for i in indices):
            try:
                arrays.append(self.image(index))
                kept.append(index)
            except OSError as err:
                if index not in self.skipped:
                    log.warning("skipping unreadable image: %s", err)
                self.skipped.add(index)
        if not arrays:
            return torch.empty(0, 3, self.resolution, self.resolution), kept
        return uint8_to_float(torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)), kept


def uint8_to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] → float [-1, 1]."""
    return images.float().div(127.5).sub(1.0)


def float_to_uint8(images: torch.Tensor) -> torch.Tensor:
    """float [-1, 1] → uint8 [0, 255] (clamped, rounded)."""
    return images.detach().float().add(1.0).mul(127.5).round().clamp(0, 255).to(torch.uint8)


class LatentSource(ABC):
    """A dataset generated directly as code grids (no images, no tokenizer), with known truths recorded in the
    latent meta (e.g. the exact entropy in bits per token)."""

    Config: ClassVar[type] = NoConfig

    def __init__(self, config: Any):
        self.config = config

    @property
    @abstractmethod
    def codebook_size(self) -> int: ...

    @property
    @abstractmethod
    def latent_shape(self) -> tuple[int, int]: ...

    @abstractmethod
    def generate(self, count: int, seed: int) -> np.ndarray:
        """``count`` grids (int N×h×w), a pure function of (config, count, seed)."""

    @abstractmethod
    def truth(self) -> dict[str, Any]:
        """Known facts stored in the latent meta under ``truth`` (``entropy_bits_per_token`` at least)."""

    @abstractmethod
    def fingerprint(self) -> str: ...


@dataclass(frozen=True)
class Column:
    """One report column a metric produces."""

    direction: Literal["higher", "lower", "none"]
    label: str = ""
    digits: int = 3


class EvaluationContext(Protocol):
    """What a metric's ``compute`` may use of one cell (the runner's ``EvalContext`` implements it)."""

    prior: Prior
    tokenizer: Tokenizer | None  # None for latent-only benchmarks: then only metrics without ``needs_images`` run
    data: DataBundle  # the benchmark's train/test latent splits and their metadata
    samples: torch.Tensor  # the cell's generated code grids, int64 N×h×w on the CPU
    sample_labels: torch.Tensor | None  # class labels the samples were drawn with (conditional priors)
    timing: dict[str, float]  # sampling facts gathered while the samples were drawn (e.g. ``nfe``)
    features: FeatureSet | None  # real-image features and the samples' (computed on first use); None without images
    seed: int  # the cell seed
    device: torch.device
    precision: str  # "fp32" or "bf16": what ``autocast`` applies
    autocast: Callable[[], Any]  # a fresh autocast context for the run's precision
    options: dict[str, Any]  # the cell's sampler settings, as passed to ``prior.sample``/``inpaint``
    batch_size: int
    notes: dict[str, str]  # report notes by topic (shown under the tables)
    artifacts: dict[str, Any]  # images a metric leaves for the cell's figures

    @property
    def test_codes(self) -> torch.Tensor:
        """Held-out code grids."""
        ...

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """uint8 images B×3×H×W of code grids, decoded in batches on the run's device."""
        ...

    def inpainting_inputs(self, count: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(uint8 images, codes, class labels or None) of ``count`` held-out items disjoint from the reference set."""
        ...

    def inpaint(self, codes: torch.Tensor, keep_mask: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """The prior's inpainting of ``codes`` where ``keep_mask`` is False, with the cell's settings and seed."""
        ...

    def held_out_nll(self) -> float:
        """Mean NLL of the held-out grids in bits per token (computed once per cell)."""
        ...

    def held_out_nll_se(self) -> float:
        """Standard error of ``held_out_nll`` over the held-out grids."""
        ...


class Metric(ABC):
    """Computes report columns for one cell from an ``EvaluationContext``."""

    Config: ClassVar[type] = NoConfig
    needs_images: ClassVar[bool] = False  # needs a tokenizer that can decode
    uses_images: ClassVar[bool] = False  # runs without images, and uses the reference image features when there are
    group: ClassVar[str] = "generation"  # report table the columns go to (generation, speed, inpainting, ...)

    @property
    def wants_images(self) -> bool:
        """Whether the run should decode images and extract reference features for this metric."""
        return self.needs_images or self.uses_images

    @abstractmethod
    def columns(self, config: Any) -> dict[str, Column]: ...

    @abstractmethod
    def compute(self, ctx: EvaluationContext, config: Any) -> dict[str, float]: ...

    def check_counts(self, config: Any, key: str, samples: int, references: int) -> None:
        """Raise ``ConfigError`` (naming a key under ``key``) when ``samples`` generated and ``references`` real
        images cannot give this metric a value; called before any work for benchmarks that decode images.
        The default accepts any counts."""
        return None


class FeatureExtractor(nn.Module, ABC):
    """Maps uint8 images B×3×H×W to feature vectors B×D for FID, KID and PRDC."""

    dims: int
    real_weights: bool  # False: randomly initialised, numbers not comparable to published ones
    description: str
    weights_key: str = ""  # identifies weights ``prepare`` trained or loaded (part of the real-feature cache key)

    @abstractmethod
    def forward(self, images: torch.Tensor) -> torch.Tensor: ...

    def prepare(self, data: DataBundle, cache: Path, device: torch.device, key: str = "metrics") -> None:  # noqa: B027
        """Called by the runner once before any features are extracted, with the benchmark's data and cache folder:
        the hook of a network trained on the benchmark's own images (errors name ``key``). The default does nothing."""
