"""FID and KID through torch-fidelity's statistics functions, on features vqbench extracts and caches."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_features_to_statistics, fid_statistics_to_metric
from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, KEY_METRIC_KID_STD, kid_features_to_metric

from ..config import positive
from ..errors import ConfigError
from ..interfaces import Column, Metric


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """‖μ1 − μ2‖² + Tr(Σ1 + Σ2 − 2(Σ1Σ2)^½) (torch-fidelity's implementation)."""
    stat1 = {"mu": np.atleast_1d(np.asarray(mu1, dtype=np.float64)), "sigma": np.atleast_2d(np.asarray(sigma1, dtype=np.float64))}
    stat2 = {"mu": np.atleast_1d(np.asarray(mu2, dtype=np.float64)), "sigma": np.atleast_2d(np.asarray(sigma2, dtype=np.float64))}
    return float(fid_statistics_to_metric(stat1, stat2, verbose=False)[KEY_METRIC_FID])


def feature_statistics(features: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    stats = fid_features_to_statistics(features.double().cpu())
    return stats["mu"], stats["sigma"]


def fid_from_features(real: torch.Tensor, fake: torch.Tensor) -> float:
    return frechet_distance(*feature_statistics(real), *feature_statistics(fake))


def kid_from_features(real: torch.Tensor, fake: torch.Tensor, subsets: int = 100, subset_size: int = 1000, seed: int = 0) -> tuple[float, float]:
    """(mean, std) of the unbiased polynomial-kernel MMD² over random subsets (torch-fidelity's estimator).

    Both sets must hold at least ``subset_size`` features: a smaller subset would change the estimator's variance
    (the std reported here) silently, so it is refused, as torch-fidelity does."""
    if subset_size > min(len(real), len(fake)):
        raise ValueError(f"KID subset_size {subset_size} exceeds the feature sets ({len(real)} real, {len(fake)} generated)")
    out = kid_features_to_metric(
        fake.double().cpu(), real.double().cpu(), kid_subsets=subsets, kid_subset_size=subset_size, kid_kernel="poly",
        kid_kernel_poly_degree=3, kid_kernel_poly_gamma=None, kid_kernel_poly_coef0=1, rng_seed=seed, verbose=False,
    )  # fmt: skip
    return float(out[KEY_METRIC_KID_MEAN]), float(out[KEY_METRIC_KID_STD])


def kid_all_pairs(real: torch.Tensor, fake: torch.Tensor) -> float:
    """Unbiased MMD² with KID's kernel (x·y/d + 1)³ over every pair of both sets (no subsets): for small sets such
    as inpainting results, where subsets would only re-sample the same few images."""
    x, y = fake.double(), real.double()
    if min(len(x), len(y)) < 2:
        raise ValueError(f"KID needs at least 2 features per set, got {len(y)} real and {len(x)} generated")
    kernel = lambda a, b: (a @ b.T / a.shape[1] + 1.0) ** 3  # noqa: E731
    k_xx, k_yy, k_xy = kernel(x, x), kernel(y, y), kernel(x, y)
    m, n = len(x), len(y)
    within = (k_xx.sum() - k_xx.diagonal().sum()) / (m * (m - 1)) + (k_yy.sum() - k_yy.diagonal().sum()) / (n * (n - 1))
    return float(within - 2 * k_xy.mean())


class FIDMetric(Metric):
    """Fréchet distance between feature statistics of decoded samples and held-out real images (or, with
    ``metrics.reference_stats``, the statistics in that file)."""

    needs_images = True
    bootstrap: int = 0  # resamples for fid_ci_low/high (metrics.bootstrap, set by the runner; vqbench.metrics.bootstrap)

    def columns(self, config) -> dict[str, Column]:
        return {"fid": Column("lower", "FID", 2)}

    def compute(self, ctx, config) -> dict[str, float]:
        (mu_real, sigma_real), fake = ctx.features.real_statistics(), ctx.features.fake()
        values = {"fid": frechet_distance(mu_real, sigma_real, *feature_statistics(fake))}
        if self.bootstrap:
            from .bootstrap import fid_bootstrap

            values |= fid_bootstrap(mu_real, sigma_real, fake, values["fid"], self.bootstrap, ctx.seed)
        return values

    def check_counts(self, config, key: str, samples: int, references: int) -> None:
        if min(samples, references) < 2:
            raise ConfigError("sampling.num_samples" if samples < 2 else "metrics.num_real", "FID needs at least 2 images per set (a covariance)")


class KIDMetric(Metric):
    """Kernel distance (unbiased polynomial MMD² over random subsets), torch-fidelity's estimator."""

    needs_images = True
    bootstrap: int = 0  # resamples for kid_ci_low/high (metrics.bootstrap, set by the runner)

    @dataclass
    class Config:
        subsets: int = 100
        subset_size: int = 1000  # at most num_real and sampling.num_samples (checked before any work)
        seed: int = 0  # subset draws: fixed, so every cell and seed uses the same ones

        def validate(self, key: str) -> None:
            positive(key, "subsets", self.subsets)
            if self.subset_size < 2:
                raise ConfigError(f"{key}.subset_size", f"must be at least 2, got {self.subset_size}")

    def columns(self, config) -> dict[str, Column]:
        return {"kid": Column("lower", "KID (raw)", 4), "kid_subset_std": Column("none", "KID subset std (raw)", 4)}

    def compute(self, ctx, config) -> dict[str, float]:
        real, fake = ctx.features.real, ctx.features.fake()
        mean, std = kid_from_features(real, fake, config.subsets, config.subset_size, config.seed)
        values = {"kid": mean, "kid_subset_std": std}
        if self.bootstrap:
            from .bootstrap import kid_bootstrap

            values |= kid_bootstrap(real, fake, mean, config.subsets, config.subset_size, config.seed, self.bootstrap, ctx.seed, ctx.device)
        return values

    def check_counts(self, config, key: str, samples: int, references: int) -> None:
        for name, count in {"metrics.num_real": references, "sampling.num_samples": samples}.items():
            if config.subset_size > count:
                raise ConfigError(
                    f"{key}.subset_size",
                    f"{config.subset_size} exceeds {name} = {count}; lower the subset size (KID subsets are drawn without replacement)",
                )
