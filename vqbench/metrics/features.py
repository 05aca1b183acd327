"""Image features for FID/KID/PRDC: batched extraction and a content-addressed cache for real-image features."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..distributed import gather_batches, world
from ..interfaces import FeatureExtractor
from ..io import load_torch, save_torch
from .reference_stats import ReferenceStats

log = logging.getLogger(__name__)


@torch.inference_mode()
def extract_features(
    extractor: FeatureExtractor, batches: Iterable[torch.Tensor], device: torch.device, total: int | None = None, desc: str = "features"
) -> torch.Tensor:
    """Features (N×D float64 on CPU) of uint8 image batches B×3×H×W."""
    out = []
    with tqdm(total=total, desc=desc, unit="img", leave=False) as bar:
        for images in batches:
            if images.dtype != torch.uint8:
                raise TypeError(f"feature extraction expects uint8 images, got {images.dtype}")
            out.append(extractor(images.to(device)).double().cpu())
            bar.update(len(images))
    return torch.cat(out) if out else torch.zeros(0, extractor.dims, dtype=torch.float64)


@torch.inference_mode()
def extract_features_split(
    extractor: FeatureExtractor, batches: Callable[[Sequence[int]], Iterable[torch.Tensor]], count: int, device: torch.device,
    total: int | None = None, desc: str = "features",
) -> torch.Tensor | None:  # fmt: skip
    """Features of ``count`` batches split across ranks: rank r extracts batches r, r + N, … from ``batches(numbers)``
    (which yields the uint8 images of those batch numbers, in order, e.g. ``DataBundle.reference_batches(...,
    batches=numbers)``), and rank 0 returns all features (N×D float64, in batch order, the same as one process);
    the other ranks return None. One process: ``extract_features`` over every batch."""
    w = world()
    if not w.active:
        return extract_features(extractor, batches(range(count)), device, total, desc)
    rounds = list(w.rounds(count))
    images = iter(batches([b for b in rounds if b is not None]))
    out = []
    with tqdm(total=total, desc=desc, unit="img", leave=False, disable=not w.main) as bar:
        for b in rounds:
            mine = []
            if b is not None:
                batch = next(images)
                if batch.dtype != torch.uint8:
                    raise TypeError(f"feature extraction expects uint8 images, got {batch.dtype}")
                mine.append((b, extractor(batch.to(device)).double().cpu()))
            gathered = gather_batches(mine)
            if gathered is not None:
                out.extend(gathered)
                bar.update(sum(len(f) for f in gathered))
    if not w.main:
        return None
    return torch.cat(out) if out else torch.zeros(0, extractor.dims, dtype=torch.float64)


def cached_features(cache_file: Path, compute: Callable[[], torch.Tensor]) -> torch.Tensor:
    """Load features from ``cache_file`` or compute and store them (atomically)."""
    if cache_file.is_file():
        log.info("real-image features from cache %s", cache_file)
        return load_torch(cache_file)["features"]
    features = compute()
    save_torch(cache_file, {"features": features})
    return features


@dataclass
class FeatureSet:
    """Real features of the reference set and a lazily computed feature matrix for the cell's samples."""

    extractor: FeatureExtractor
    real: torch.Tensor
    fake_images: Callable[[], Iterable[torch.Tensor]]
    device: torch.device
    num_fake: int
    _fake: torch.Tensor | None = field(default=None, repr=False)
    stats: ReferenceStats | None = None  # metrics.reference_stats: FID's real-side statistics come from this file

    def real_statistics(self) -> tuple[np.ndarray, np.ndarray]:
        """(mu, sigma) of the reference side of FID: the file's when given, else those of the real features."""
        if self.stats is not None:
            return self.stats.mu, self.stats.sigma
        from .fid import feature_statistics

        return feature_statistics(self.real)

    def fake(self) -> torch.Tensor:
        if self._fake is None:
            self._fake = extract_features(self.extractor, self.fake_images(), self.device, self.num_fake, "sample features")
        return self._fake

    def of(self, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
        return extract_features(self.extractor, images.split(batch_size), self.device, len(images))
