"""``pixels``: the identity tokenizer: one code per grey level of each pixel (or f×f block), no network.

The pixel-level setting of megapixel-SUNDAE's class-conditional MNIST experiment: priors model the image itself, with
no VQ-GAN in the way. A code is the grey level round(grey·(levels − 1)) of a pixel (the mean of its RGB channels, or
of an f×f block when ``factor`` > 1); decoding paints that grey. Lossless for images drawn from those levels (the
``digits`` dataset: 17 levels). It is a ``TrainableTokenizer`` with nothing to learn, so a benchmark names a preset
(``tokenizer: {name: pixels, preset: digits}``) and the normal runner path saves, caches and reloads it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

import vqbench
from vqbench.config import parse
from vqbench.errors import ConfigError
from vqbench.interfaces import ImageSource, NoConfig, TrainableTokenizer
from vqbench.io import load_torch


@dataclass
class PixelsConfig:
    levels: int = 17  # codebook size: grey levels 0 … levels − 1 spread evenly over [0, 255]
    factor: int = 1  # one code per factor×factor block (its mean grey)

    def validate(self, key: str) -> None:
        if not 2 <= self.levels <= 256:
            raise ConfigError(f"{key}.levels", f"must lie in [2, 256], got {self.levels}")
        if self.factor < 1:
            raise ConfigError(f"{key}.factor", f"must be at least 1, got {self.factor}")


PRESETS: dict[str, dict[str, Any]] = {"digits": {"levels": 17, "factor": 1}, "grey256": {"levels": 256, "factor": 1}}


class PixelTokenizer(TrainableTokenizer):
    """Grey level per pixel (or block) as the code; decoding paints the grey back (no parameters)."""

    Config = PixelsConfig
    TrainConfig = NoConfig
    presets = PRESETS

    def __init__(self, config: PixelsConfig):
        super().__init__()
        self.config = config
        self.codebook_size = config.levels
        self.downsample_factor = config.factor

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        grey = images.float().mean(dim=1, keepdim=True)  # B×1×H×W in [-1, 1]
        if self.config.factor > 1:
            grey = F.avg_pool2d(grey, self.config.factor)
        unit = (grey[:, 0] + 1.0) / 2.0
        return (unit * (self.config.levels - 1)).round().clamp(0, self.config.levels - 1).long()

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        grey = codes.float() / (self.config.levels - 1) * 2.0 - 1.0  # B×h×w in [-1, 1]
        out = grey[:, None].expand(-1, 3, -1, -1)
        if self.config.factor > 1:
            out = out.repeat_interleave(self.config.factor, dim=2).repeat_interleave(self.config.factor, dim=3)
        return out.contiguous()

    def config_dict(self) -> dict[str, Any]:
        return asdict(self.config)

    @classmethod
    def load(cls, path: str | Path, **options: Any) -> PixelTokenizer:
        state = load_torch(path)
        if not isinstance(state, dict) or "config" not in state:
            raise ConfigError("tokenizer.checkpoint", f"{path} is not a pixels tokenizer file (no config)")
        return cls(parse(PixelsConfig, state["config"], f"{path}:config"))

    @classmethod
    def from_preset(cls, preset: str, overrides: dict[str, Any] | None = None, key: str = "tokenizer") -> PixelTokenizer:
        if preset not in PRESETS:
            from vqbench.registry import did_you_mean

            raise ConfigError(f"{key}.preset", f"unknown pixels preset {preset!r}{did_you_mean(preset, list(PRESETS))} (known: {', '.join(PRESETS)})")
        return cls(parse(PixelsConfig, {**PRESETS[preset], **(overrides or {})}, f"{key}.params"))

    @classmethod
    def fit(cls, model: TrainableTokenizer, source: ImageSource, indices: np.ndarray, config: Any, **kwargs: Any) -> dict[str, Any]:  # type: ignore[override]
        """Nothing to learn: the code of a pixel is its grey level."""
        return {"trained": "nothing to learn (fixed grey-level quantisation)"}


@vqbench.hookimpl
def vqbench_register_tokenizers(registry):
    registry.register("pixels", PixelTokenizer)
