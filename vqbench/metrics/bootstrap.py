"""Bootstrap CIs over a cell's generated samples for FID, KID and PRDC (``metrics.bootstrap: N``).

Each of N resamples draws the generated samples' cached features with replacement (a ``torch.Generator`` seeded from
the cell seed, so FID, KID and PRDC see the same resamples); the reference features stay fixed. A statistic's 2.5
and 97.5 percentiles over the resamples, shifted by the bootstrap bias (mean over resamples − point value) so they
lie around the point value, are stored as ``<name>_ci_low`` / ``<name>_ci_high``, and that bias as
``<name>_boot_bias`` (raw percentile = bound + bias). Without the shift FID's finite-sample bias, which resampling
adds once more, would put the whole interval above the point value. The interval is the sampling noise at this
sample count, not the estimator's bias. Resamples repeat samples, so each statistic keeps its point estimator's view
of distinct samples: KID's within-sample kernel sum leaves out pairs of copies of one sample (as it leaves out the
diagonal), PRDC keeps each sample's k-NN radius from the full set (precision and density are then means over the
samples; recall and coverage count the distinct samples a resample holds)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .fid import feature_statistics, frechet_distance
from .prdc import kth_neighbour_radii, pairwise_distances

log = logging.getLogger(__name__)
LEVEL = 0.95
SUFFIXES = ("_ci_low", "_ci_high", "_boot_bias")
RANGES = {"fid": (0.0, np.inf), "precision": (0.0, 1.0), "recall": (0.0, 1.0), "density": (0.0, np.inf), "coverage": (0.0, 1.0)}
SEED_OFFSET = 7_368_787  # the resampling stream is apart from the cell's sampling streams (seed * 2**20 + batch)


def interval_key(name: str) -> bool:
    """Whether a value name is a bootstrap value (``fid_ci_low``, ``fid_boot_bias``), not a report column."""
    return name.endswith(SUFFIXES)


def apply_bootstrap(configured: dict[str, tuple[Any, Any]], count: int) -> None:
    """Set ``metrics.bootstrap`` on every configured metric that takes it (a ``bootstrap`` attribute)."""
    takers = [name for name, (metric, _) in configured.items() if hasattr(metric, "bootstrap")]
    for name in takers:
        configured[name][0].bootstrap = count
    if count and not takers:
        log.warning("metrics.bootstrap = %d, but no enabled metric takes it (fid, kid, prdc do)", count)


def resamples(n: int, count: int, seed: int) -> Iterator[torch.Tensor]:
    """``count`` index vectors of ``n`` draws with replacement from range(n), from a generator seeded by ``seed``."""
    g = torch.Generator().manual_seed(SEED_OFFSET + seed)
    for _ in range(count):
        yield torch.randint(n, (n,), generator=g)


def bootstrap_interval(
    statistic: Callable[[torch.Tensor], dict[str, float]], point: dict[str, float], n: int, count: int, seed: int
) -> dict[str, float]:
    """{name_ci_low, name_ci_high, name_boot_bias} per value of ``statistic(indices)`` (whose value at ``arange(n)``
    is ``point``) over ``count`` resamples of ``n`` samples, the bounds kept in the statistic's range (``RANGES``);
    empty when ``count`` is 0."""
    draws: dict[str, list[float]] = {}
    for index in resamples(n, count, seed):
        for name, value in statistic(index).items():
            draws.setdefault(name, []).append(value)
    tail = 100 * (1 - LEVEL) / 2
    out: dict[str, float] = {}
    for name, values in draws.items():
        array = np.asarray(values, dtype=np.float64)
        bias = float(np.nanmean(array)) - point[name]
        low, high = np.clip(np.nanpercentile(array, [tail, 100 - tail]) - bias, *RANGES.get(name, (-np.inf, np.inf)))
        out |= {f"{name}_ci_low": float(low), f"{name}_ci_high": float(high), f"{name}_boot_bias": bias}
    return out


def fid_bootstrap(real_mu: np.ndarray, real_sigma: np.ndarray, fake: torch.Tensor, point: float, count: int, seed: int) -> dict[str, float]:
    """FID of resampled generated features against fixed reference statistics (``point``: the FID of ``fake``)."""

    def statistic(index: torch.Tensor) -> dict[str, float]:
        return {"fid": frechet_distance(real_mu, real_sigma, *feature_statistics(fake[index]))}

    return bootstrap_interval(statistic, {"fid": point}, len(fake), count, seed)


def _poly_kernel(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a @ b.T / a.shape[1] + 1.0) ** 3


def kid_resampled(
    real: torch.Tensor, fake: torch.Tensor, source: torch.Tensor, subsets: int, subset_size: int, seed: int, device: torch.device | None = None
) -> float:
    """KID as ``kid_from_features`` draws it (the same subset draws for the same ``seed``; float64, on ``device``) of a
    resampled feature set ``fake`` whose rows are copies of samples ``source``: pairs of copies of one sample count as
    the diagonal does (left out), so repeated samples do not inflate the within-sample term. ``source = arange``
    gives the point value."""
    rng = np.random.RandomState(seed)
    device = device or torch.device("cpu")
    fake, real, source = fake.double().to(device), real.double().to(device), source.to(device)
    m, values = subset_size, []
    for _ in range(subsets):
        a = torch.from_numpy(rng.choice(len(fake), m, replace=False)).to(device)
        b = torch.from_numpy(rng.choice(len(real), m, replace=False)).to(device)
        x, y, ids = fake[a], real[b], source[a]
        distinct = ids[:, None] != ids[None, :]
        within_x = (_poly_kernel(x, x) * distinct).sum() / distinct.sum().clamp_min(1)
        k_yy = _poly_kernel(y, y)
        within_y = (k_yy.sum() - k_yy.diagonal().sum()) / (m * (m - 1))
        values.append(float(within_x + within_y - 2 * _poly_kernel(x, y).mean()))
    return float(np.mean(values))


def kid_bootstrap(
    real: torch.Tensor, fake: torch.Tensor, point: float, subsets: int, subset_size: int, kid_seed: int, count: int, seed: int,
    device: torch.device | None = None,
) -> dict[str, float]:  # fmt: skip
    """KID (its configured subsets and subset seed) of resampled generated features against the fixed reference
    features (``point``: the KID of ``fake``), on ``device``."""

    def statistic(index: torch.Tensor) -> dict[str, float]:
        return {"kid": kid_resampled(real, fake[index], index, subsets, subset_size, kid_seed, device)}

    return bootstrap_interval(statistic, {"kid": point}, len(fake), count, seed)


@dataclass
class PRDCParts:
    """What PRDC needs per generated sample, from the full sets: how many real balls hold each sample, and the
    (real, sample) index pairs behind recall (real point inside the sample's k-NN ball) and coverage (sample
    inside the real point's ball)."""

    inside_count: torch.Tensor
    recall_pairs: torch.Tensor  # 2 × P: real index, sample index
    coverage_pairs: torch.Tensor
    num_real: int
    nearest_k: int


def prdc_parts(real: torch.Tensor, fake: torch.Tensor, nearest_k: int, chunk: int = 2048) -> PRDCParts:
    """``PRDCParts`` of two feature sets, with ``prdc``'s radii and strict comparisons."""
    real_radii, fake_radii = kth_neighbour_radii(real, nearest_k, chunk), kth_neighbour_radii(fake, nearest_k, chunk)
    inside_count = fake.new_zeros(len(fake))
    recall_pairs: list[torch.Tensor] = []
    coverage_pairs: list[torch.Tensor] = []
    for i in range(0, len(fake), chunk):
        d = pairwise_distances(real, fake[i : i + chunk], chunk)  # |real| × chunk
        inside = d < real_radii[:, None]
        inside_count[i : i + chunk] = inside.sum(dim=0).double()
        for pairs, hit in ((coverage_pairs, inside), (recall_pairs, d < fake_radii[None, i : i + chunk])):
            j, k = hit.nonzero(as_tuple=True)
            pairs.append(torch.stack([j, k + i]))
    return PRDCParts(inside_count, torch.cat(recall_pairs, dim=1), torch.cat(coverage_pairs, dim=1), len(real), nearest_k)


def prdc_from_parts(parts: PRDCParts, index: torch.Tensor) -> dict[str, float]:
    """PRDC of the resample ``index`` of the generated samples (``arange``: the point values of ``prdc``)."""
    inside = parts.inside_count
    count = torch.bincount(index.to(inside.device), minlength=len(inside)).double()
    chosen = count > 0

    def reached(pairs: torch.Tensor) -> float:
        hit = torch.zeros(parts.num_real, dtype=torch.bool, device=pairs.device)
        hit[pairs[0][chosen[pairs[1]]]] = True
        return float(hit.double().mean())

    return {
        "precision": float((count * (inside > 0).double()).sum() / count.sum()),
        "recall": reached(parts.recall_pairs),
        "density": float((count * inside).sum() / (parts.nearest_k * count.sum())),
        "coverage": reached(parts.coverage_pairs),
    }


def prdc_bootstrap(
    real: torch.Tensor, fake: torch.Tensor, point: dict[str, float], nearest_k: int, count: int, seed: int, device: torch.device | None = None
) -> dict[str, float]:
    """PRDC of resampled generated features against the fixed reference features (``point``: ``prdc`` of ``fake``;
    distances computed once)."""
    real, fake = real.double(), fake.double()
    if device is not None:
        real, fake = real.to(device), fake.to(device)
    parts = prdc_parts(real, fake, nearest_k)
    return bootstrap_interval(lambda index: prdc_from_parts(parts, index), point, len(fake), count, seed)
