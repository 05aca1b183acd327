"""Reference statistics for FID: the real-image feature mean and covariance in the npz layout pytorch-fid and
torch-fidelity read (``np.savez(path, mu=..., sigma=...)``), plus the feature network that computed them.

``vqbench export DIR --format fid-stats`` writes such a file; ``metrics.reference_stats: FILE`` makes FID use one
instead of the statistics of the benchmark's own real features (KID and PRDC still use the real features)."""

from __future__ import annotations

import hashlib
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError
from ..interfaces import FeatureExtractor
from ..io import atomic_path, sha256_file

NETWORK_KEY = "feature_network"  # the registry name of the feature extractor (metrics.feature_extractor)
WEIGHTS_KEY = "feature_weights_sha256"  # sha256 of its parameters and buffers (see ``weights_digest``)
IDENTITY_KEYS = (NETWORK_KEY, WEIGHTS_KEY)


@dataclass
class ReferenceStats:
    """mu (D) and sigma (D×D), float64, from a file, with the file's digest and recorded identity (None if absent)."""

    mu: np.ndarray
    sigma: np.ndarray
    path: str
    sha256: str
    identity: dict[str, str] | None
    count: int | None = None  # real features behind the statistics, when recorded

    def describe(self) -> dict[str, Any]:
        """What protocol.json and a cell's protocol record about the file."""
        return {"file": Path(self.path).name, "path": str(self.path), "sha256": self.sha256, "identity": self.identity, "count": self.count}


def weights_digest(module: torch.nn.Module) -> str:
    """sha256 over a network's state dict (every parameter and buffer: name, dtype, shape, bytes, in key order)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        value = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{value.dtype}|{tuple(value.shape)}|".encode())
        digest.update(value.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def extractor_identity(name: str, extractor: torch.nn.Module) -> dict[str, str]:
    """The identity recorded with reference statistics: the extractor's registry name and its weights digest."""
    return {NETWORK_KEY: name, WEIGHTS_KEY: weights_digest(extractor)}


def show_identity(identity: Mapping[str, str]) -> str:
    return f"{identity[NETWORK_KEY]} (weights sha256 {identity[WEIGHTS_KEY][:12]}…)"


def write_fid_stats(path: Path, features: torch.Tensor, identity: Mapping[str, str]) -> tuple[np.ndarray, np.ndarray]:
    """Write mu and sigma of ``features`` (N×D) as torch-fidelity computes them (float64), the identity strings and
    the feature count to ``path`` atomically; returns (mu, sigma)."""
    from .fid import feature_statistics

    mu, sigma = feature_statistics(features)
    mu, sigma = np.asarray(mu, dtype=np.float64), np.asarray(sigma, dtype=np.float64)
    network, weights = np.array(str(identity[NETWORK_KEY])), np.array(str(identity[WEIGHTS_KEY]))
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:  # a handle: np.savez would append .npz to the name
        np.savez(
            handle, mu=mu, sigma=sigma, num_features=np.array(len(features), dtype=np.int64), feature_network=network, feature_weights_sha256=weights
        )
    return mu, sigma


def load_reference_stats(path: str | Path, dims: int, key: str = "metrics.reference_stats") -> ReferenceStats:
    """Read and check a statistics file: mu of D and sigma of D×D finite numbers, D = ``dims``; identity strings if
    present. Every problem is a ConfigError naming ``key`` and the file."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise ConfigError(key, f"{str(file)!r} not found; write one with `vqbench export DIR --format fid-stats`")
    try:
        with np.load(file, allow_pickle=False) as data:
            entries = {name: data[name] for name in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise ConfigError(key, f"{file} is not a readable npz file ({type(err).__name__}: {err}); give an npz with `mu` and `sigma`") from None
    missing = [name for name in ("mu", "sigma") if name not in entries]
    if missing:
        raise ConfigError(
            key, f"{file} has no {' or '.join(missing)} (entries: {', '.join(sorted(entries)) or 'none'}); give an npz with `mu` and `sigma`"
        )
    mu, sigma = entries["mu"], entries["sigma"]
    if mu.dtype.kind not in "fi" or sigma.dtype.kind not in "fi":
        raise ConfigError(key, f"{file}: mu and sigma must be numbers, got {mu.dtype} and {sigma.dtype}")
    if mu.shape != (dims,) or sigma.shape != (dims, dims):
        raise ConfigError(
            key,
            f"{file} holds statistics of {mu.shape} / {sigma.shape} features, this benchmark's feature network gives {dims}: "
            "use statistics of the same network",
        )
    if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
        raise ConfigError(key, f"{file}: mu or sigma holds NaN or infinite values; recompute the statistics")
    identity = None
    if any(name in entries for name in IDENTITY_KEYS):
        if not all(name in entries and entries[name].dtype.kind == "U" for name in IDENTITY_KEYS):
            raise ConfigError(key, f"{file}: {' and '.join(IDENTITY_KEYS)} must both be strings when either is present")
        identity = {name: str(entries[name]) for name in IDENTITY_KEYS}
    count = int(entries["num_features"]) if "num_features" in entries and entries["num_features"].shape == () else None
    return ReferenceStats(mu.astype(np.float64), sigma.astype(np.float64), str(file), sha256_file(file), identity, count)


def check_identity(stats: ReferenceStats, expected: Mapping[str, str], key: str = "metrics.reference_stats") -> None:
    """Refuse statistics computed by another feature network (name or weights); files without an identity pass."""
    if stats.identity is not None and any(stats.identity[k] != expected[k] for k in IDENTITY_KEYS):
        raise ConfigError(
            key,
            f"{stats.path} was computed with {show_identity(stats.identity)}, this benchmark's feature network is "
            f"{show_identity(expected)}; export statistics with this network (`vqbench export DIR --format fid-stats`) or drop reference_stats",
        )


def has_own_weights(extractor_cls: type) -> bool:
    """True when a feature extractor trains or loads its weights in ``prepare`` (from the benchmark's data): its
    weights, and so its identity, are unknown before a run."""
    return getattr(extractor_cls, "prepare", None) is not FeatureExtractor.prepare


def benchmark_stats(metrics: Any, extractor_cls: type[FeatureExtractor], key: str = "metrics.reference_stats") -> ReferenceStats:
    """Load ``metrics.reference_stats`` and check it against the benchmark's feature network (built on the CPU to
    hash its weights); called before anything is written."""
    if has_own_weights(extractor_cls):
        raise ConfigError(
            key,
            f"feature extractor '{metrics.feature_extractor}' gets its weights from the benchmark's own data, so statistics "
            "from a file cannot be checked against it; remove reference_stats (FID then uses the real features)",
        )
    stats = load_reference_stats(str(metrics.reference_stats), extractor_cls.dims, key)
    extractor = extractor_cls(weights=metrics.feature_weights, allow_random=metrics.allow_random_features, seed=metrics.feature_seed, key="metrics")
    check_identity(stats, extractor_identity(metrics.feature_extractor, extractor), key)
    return stats


def stats_protocol(stats: ReferenceStats | None, configured: Mapping[str, tuple[Any, Any]]) -> dict[str, Any] | None:
    """protocol.json's record of a statistics file: the file, and which metrics use it (FID) and which the real
    features (every other metric that needs images)."""
    if stats is None:
        return None
    others = [name for name, (metric, _) in configured.items() if metric.needs_images and name != "fid"]
    return stats.describe() | {"from_file": ["fid"] if "fid" in configured else [], "from_features": others}
