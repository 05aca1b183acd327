"""Precision, recall, density and coverage (Naeem et al. 2020) on feature vectors, in torch with chunked distances."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..config import positive
from ..errors import ConfigError
from ..interfaces import Column, Metric


def _as_tensor(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    return (x if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x))).to(torch.float64)


def pairwise_distances(a: torch.Tensor, b: torch.Tensor, chunk: int = 2048) -> torch.Tensor:
    """Euclidean distances |a|×|b| through one matrix product per row chunk: sqrt(‖a‖² + ‖b‖² − 2ab), clamped at 0."""
    b_sq = b.pow(2).sum(dim=1)
    rows = []
    for i in range(0, len(a), chunk):
        part = a[i : i + chunk]
        sq = (part.pow(2).sum(dim=1, keepdim=True) + b_sq[None]).addmm_(part, b.T, alpha=-2.0)
        rows.append(sq.clamp_min_(0.0).sqrt_())
    return torch.cat(rows) if rows else a.new_zeros(0, len(b))


def kth_neighbour_radii(features: torch.Tensor, k: int, chunk: int = 2048) -> torch.Tensor:
    """Distance of every point to its k-th nearest neighbour in the same set (excluding itself)."""
    radii = []
    for i in range(0, len(features), chunk):
        d = pairwise_distances(features[i : i + chunk], features, chunk)
        # the point itself is excluded by index (its distance through the matrix product is only ~0)
        d[torch.arange(len(d), device=d.device), torch.arange(i, i + len(d), device=d.device)] = -1.0
        radii.append(d.kthvalue(k + 1, dim=1).values)
    return torch.cat(radii)


def prdc(real_features, fake_features, nearest_k: int = 5, chunk: int = 2048, device: torch.device | str | None = None) -> dict[str, float]:
    """{precision, recall, density, coverage} of fake vs real features (strict ``<`` comparisons, as clovaai/prdc),
    in float64 on ``device`` (default: where the features are)."""
    real, fake = _as_tensor(real_features), _as_tensor(fake_features)
    if device is not None:
        real, fake = real.to(device), fake.to(device)
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(f"expected two N×D feature matrices with equal D, got {tuple(real.shape)} and {tuple(fake.shape)}")
    if min(len(real), len(fake)) <= nearest_k:
        raise ValueError(f"nearest_k={nearest_k} needs more than {nearest_k} real and fake samples, got {len(real)} and {len(fake)}")
    real_radii = kth_neighbour_radii(real, nearest_k, chunk)
    fake_radii = kth_neighbour_radii(fake, nearest_k, chunk)
    inside_real = fake.new_zeros(len(fake))  # real balls containing each fake
    recall_hit = torch.zeros(len(real), dtype=torch.bool, device=real.device)
    min_real_to_fake = torch.full((len(real),), float("inf"), dtype=torch.float64, device=real.device)
    for i in range(0, len(fake), chunk):
        d = pairwise_distances(real, fake[i : i + chunk], chunk)  # |real| × chunk
        inside = d < real_radii[:, None]
        inside_real[i : i + chunk] = inside.sum(dim=0).double()
        min_real_to_fake = torch.minimum(min_real_to_fake, d.min(dim=1).values)
        recall_hit |= (d < fake_radii[None, i : i + chunk]).any(dim=1)
    real_covered = min_real_to_fake < real_radii
    return {
        "precision": float((inside_real > 0).double().mean()),
        "recall": float(recall_hit.double().mean()),
        "density": float(inside_real.mean() / nearest_k),
        "coverage": float(real_covered.double().mean()),
    }


class PRDCMetric(Metric):
    """PRDC on image features of decoded samples vs held-out real images."""

    @dataclass
    class Config:
        nearest_k: int = 5  # fewer than num_real and sampling.num_samples (checked before any work)

        def validate(self, key: str) -> None:
            positive(key, "nearest_k", self.nearest_k)

    needs_images = True
    bootstrap: int = 0  # resamples for <name>_ci_low/high (metrics.bootstrap, set by the runner)

    def columns(self, config) -> dict[str, Column]:
        return {name: Column("higher", name) for name in ("precision", "recall", "density", "coverage")}

    def compute(self, ctx, config) -> dict[str, float]:
        real, fake = ctx.features.real, ctx.features.fake()
        values = prdc(real, fake, nearest_k=config.nearest_k, device=ctx.device)
        if self.bootstrap:
            from .bootstrap import prdc_bootstrap

            values |= prdc_bootstrap(real, fake, values, config.nearest_k, self.bootstrap, ctx.seed, ctx.device)
        return values

    def check_counts(self, config, key: str, samples: int, references: int) -> None:
        for name, count in {"metrics.num_real": references, "sampling.num_samples": samples}.items():
            if config.nearest_k >= count:
                raise ConfigError(
                    f"{key}.nearest_k",
                    f"{config.nearest_k} needs more than {config.nearest_k} images, but {name} = {count}; lower nearest_k or raise {name}",
                )
