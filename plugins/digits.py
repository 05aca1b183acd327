"""``digits``: the real handwritten digits scikit-learn ships (1,797 images, 8×8, grey levels 0–16, classes 0–9).

No download: the data lives inside the scikit-learn package. Images are grey, rendered as RGB uint8 with grey level g
at round(255·g/16); ``resolution`` may be 8 or a multiple of it (each pixel repeated, so every grey level survives
exactly). The label is the digit (``label_names = ("digit",)``), so class-conditional priors can run on it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cached_property

import numpy as np

import vqbench
from vqbench.config import positive
from vqbench.errors import ConfigError
from vqbench.interfaces import ImageSource
from vqbench.io import fingerprint

GREY_LEVELS = 17  # 0 … 16
NATIVE = 8


@dataclass
class DigitsConfig:
    count: int | None = None  # use only the first N images (default: all 1,797)

    def validate(self, key: str) -> None:
        positive(key, "count", self.count)


def grey_to_uint8(levels: np.ndarray) -> np.ndarray:
    """Grey levels 0–16 → uint8 0–255."""
    return np.rint(levels.astype(np.float64) * 255.0 / (GREY_LEVELS - 1)).astype(np.uint8)


class Digits(ImageSource):
    """scikit-learn's handwritten digits as RGB images at 8² (or an integer multiple), labelled by digit."""

    Config = DigitsConfig
    label_names = ("digit",)

    def __init__(self, config: DigitsConfig, resolution: int):
        if resolution < NATIVE or resolution % NATIVE:
            raise ConfigError("dataset.resolution", f"digits are 8×8: use 8 or a multiple of 8 (pixels are repeated), got {resolution}")
        super().__init__(config, resolution)

    @cached_property
    def _data(self) -> tuple[np.ndarray, np.ndarray]:
        from sklearn.datasets import load_digits

        bunch = load_digits()
        images, target = bunch.images.astype(np.int64), bunch.target.astype(np.int64)
        n = len(images) if self.config.count is None else min(self.config.count, len(images))
        return images[:n], target[:n]

    def __len__(self) -> int:
        return len(self._data[0])

    def levels(self, index: int) -> np.ndarray:
        """The 8×8 grey levels (0–16) of image ``index``."""
        if not 0 <= index < len(self):
            raise IndexError(f"digits index {index} out of range [0, {len(self)})")
        return self._data[0][index]

    def image(self, index: int) -> np.ndarray:
        repeat = self.resolution // NATIVE
        grey = grey_to_uint8(self.levels(index)).repeat(repeat, axis=0).repeat(repeat, axis=1)
        return np.repeat(grey[..., None], 3, axis=2)

    def labels(self) -> np.ndarray:
        return self._data[1][:, None].copy()

    def fingerprint(self) -> str:
        images, target = self._data
        content = hashlib.sha256(images.tobytes() + target.tobytes()).hexdigest()
        return fingerprint("digits", content, self.resolution)


@vqbench.hookimpl
def vqbench_register_datasets(registry):
    registry.register("digits", Digits)
