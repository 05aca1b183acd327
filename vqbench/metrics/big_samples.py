"""``big_samples``: Unleashing Transformers' big samples, scored. Grids ``width_factor``× wider than the training grid
are drawn from overlapping training-size windows (priors with ``sample_big``: absorbing); reported are the FID of
training-size crops of their decodes (left, right, and centred on each seam between training-width blocks) and a
latent seam statistic that needs no images: how much less likely the horizontal pairs straddling a seam are than the
pairs inside the crops, under the training data's horizontal bigram."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

import torch

from ..config import positive
from ..errors import ConfigError
from ..interfaces import Column, Metric
from .fid import feature_statistics, frechet_distance


@runtime_checkable
class BigSampler(Protocol):
    """A prior that samples grids larger than its training grid (``plugins/absorbing_big.py``)."""

    latent_shape: tuple[int, int]
    codebook_size: int

    def sample_big(
        self, n: int, big_shape: tuple[int, int], generator: torch.Generator, labels: torch.Tensor | None = None, **options: Any
    ) -> torch.Tensor: ...


@dataclass
class BigSamplesConfig:
    num_samples: int = 64
    width_factor: int = 2  # big grids are h × (width_factor·w)
    window_step: int = 1  # stride of the windows (theirs: 1)
    order: Literal["random", "raster"] = "random"  # unmasking order (their Bernoulli 1/t rule, or raster)
    steps: int | None = None  # None: one step per big-grid token, as their script
    temperature: float | None = None  # None: the cell's sampler temperature
    smoothing: float = 1.0  # pseudo-counts of the horizontal bigram, spread as the unigram

    def validate(self, key: str) -> None:
        if self.num_samples < 2:
            raise ConfigError(f"{key}.num_samples", f"FID of the crops needs at least 2 samples, got {self.num_samples}")
        if self.width_factor < 2:
            raise ConfigError(f"{key}.width_factor", f"must be at least 2 (a seam needs two training widths), got {self.width_factor}")
        for name in ("window_step", "steps", "temperature", "smoothing"):
            positive(key, name, getattr(self, name))


def seam_columns(width: int, factor: int) -> list[int]:
    """Columns c whose pair (c, c + 1) straddles a boundary between training-width blocks of a factor·width grid."""
    return [m * width - 1 for m in range(1, factor)]


def horizontal_pairs(grids: torch.Tensor, columns: list[int] | None = None) -> torch.Tensor:
    """(x[:, r, c], x[:, r, c + 1]) for every row r and every column c in ``columns`` (default all), as M×2."""
    columns = list(range(grids.shape[2] - 1)) if columns is None else columns
    if not columns:
        return grids.new_zeros((0, 2))
    return torch.stack([grids[:, :, columns], grids[:, :, [c + 1 for c in columns]]], dim=-1).reshape(-1, 2)


class HorizontalBigram:
    """P(b | a) of horizontally adjacent codes (a left of b), fitted on training grids with ``smoothing`` pseudo-counts
    per left code spread as the (add-½) unigram: P(b | a) = (C[a, b] + λ·u[b]) / (C[a] + λ). Sparse in the pairs, so
    any codebook size fits."""

    def __init__(self, grids: torch.Tensor, codebook_size: int, smoothing: float = 1.0):
        pairs = horizontal_pairs(grids.long())
        self.v, self.smoothing = codebook_size, smoothing
        self.keys, self.counts = torch.unique(pairs[:, 0] * codebook_size + pairs[:, 1], return_counts=True)
        self.left = torch.bincount(pairs[:, 0], minlength=codebook_size).double()
        unigram = torch.bincount(grids.flatten().long(), minlength=codebook_size).double() + 0.5
        self.unigram = unigram / unigram.sum()

    def bits(self, pairs: torch.Tensor) -> torch.Tensor:
        """−log2 P(b | a) per pair (M×2 → M)."""
        keys = pairs[:, 0].long() * self.v + pairs[:, 1].long()
        where = torch.searchsorted(self.keys, keys).clamp(max=max(len(self.keys) - 1, 0))
        found = self.keys[where] == keys if len(self.keys) else torch.zeros_like(keys, dtype=torch.bool)
        joint = torch.where(found, self.counts[where].double(), 0.0) if len(self.keys) else torch.zeros(len(keys), dtype=torch.float64)
        p = (joint + self.smoothing * self.unigram[pairs[:, 1]]) / (self.left[pairs[:, 0]] + self.smoothing)
        return -torch.log2(p)


def seam_statistics(bigram: HorizontalBigram, big: torch.Tensor, width: int, factor: int) -> dict[str, float]:
    """Mean bigram bits of the seam pairs and of the pairs inside the training-width blocks of big grids, and the
    excess of the former over the latter (≈ 0: the seams look like the interior; > 0: visible seams)."""
    seams = seam_columns(width, factor)
    inside = [c for c in range(big.shape[2] - 1) if c not in seams]
    seam_bits = float(bigram.bits(horizontal_pairs(big, seams)).mean())
    inside_bits = float(bigram.bits(horizontal_pairs(big, inside)).mean())
    return {"seam": seam_bits, "inside": inside_bits, "excess": seam_bits - inside_bits}


def crops(images: torch.Tensor, width: int, factor: int) -> dict[str, torch.Tensor]:
    """Training-size crops of decoded big samples (B×3×H×(factor·width·f)): ``left``, ``right`` and ``seam`` (one crop
    centred on each seam, stacked)."""
    f = images.shape[-1] // (width * factor)
    span = width * f
    centred = [images[..., (m * width - width // 2) * f :][..., :span] for m in range(1, factor)]
    return {"left": images[..., :span], "right": images[..., -span:], "seam": torch.cat(centred)}


class BigSamplesMetric(Metric):
    """FID of training-size crops (left, right, centred on the seams) of Unleashing Transformers' big samples, and the
    seam excess of the horizontal-bigram bits; n/a for priors without ``sample_big``. ``uses_images``: the latent
    statistic needs no images; the FIDs use the run's reference image features wherever the benchmark decodes images."""

    Config = BigSamplesConfig
    uses_images = True

    def columns(self, config) -> dict[str, Column]:
        k = config.width_factor
        return {
            "big_fid_left": Column("lower", f"{k}×-wide samples: FID of left crops", 2),
            "big_fid_seam": Column("lower", f"{k}×-wide samples: FID of seam-centred crops", 2),
            "big_fid_right": Column("lower", f"{k}×-wide samples: FID of right crops", 2),
            "big_seam_bits": Column("lower", f"{k}×-wide samples: seam − inside bigram bits", 3),
        }

    def check_counts(self, config, key: str, samples: int, references: int) -> None:
        if references < 2:
            raise ConfigError("metrics.num_real", "FID of the crops needs at least 2 reference images")

    @torch.inference_mode()
    def compute(self, ctx, config: BigSamplesConfig) -> dict[str, float]:
        out = {name: math.nan for name in self.columns(config)}
        if not isinstance(ctx.prior, BigSampler):
            ctx.notes["big_samples"] = f"n/a: {type(ctx.prior).__name__} cannot sample grids larger than its training grid (no sample_big)"
            return out
        big, nfe = self.sample(ctx, config)
        (h, w), k = ctx.prior.latent_shape, config.width_factor
        bigram = HorizontalBigram(ctx.data.train.tensor(), ctx.prior.codebook_size, config.smoothing)
        stats = seam_statistics(bigram, big, w, k)
        held_out = float(bigram.bits(horizontal_pairs(ctx.test_codes)).mean())
        out["big_seam_bits"] = stats["excess"]
        note = (
            f"{len(big)} samples of {h}×{k * w} latents from {h}×{w} windows (stride {config.window_step}, {config.order} order, "
            f"{nfe:.0f} window evaluations per sample); horizontal-bigram bits per pair: seams {stats['seam']:.3f}, "
            f"inside {stats['inside']:.3f}, held-out data {held_out:.3f}"
        )
        if ctx.tokenizer is None or ctx.features is None:  # the runner extracts features only for image metrics
            why = "without images" if ctx.tokenizer is None else "without image features (enable an image metric, e.g. fid)"
            ctx.notes["big_samples"] = f"{note}; FID n/a {why}"
            return out
        mu_real, sigma_real = ctx.features.real_statistics()
        for name, images in crops(ctx.decode(big), w, k).items():
            mu, sigma = feature_statistics(ctx.features.of(images, ctx.batch_size))
            out[f"big_fid_{name}"] = frechet_distance(mu_real, sigma_real, mu, sigma)
        ctx.notes["big_samples"] = note
        return out

    @staticmethod
    def sample(ctx, config: BigSamplesConfig) -> tuple[torch.Tensor, float]:
        """(big grids on the CPU, window evaluations per sample), in the cell's batches, with the cell's class labels
        cycled (conditional priors) and a generator of its own seed."""
        prior = ctx.prior
        (h, w), n = prior.latent_shape, config.num_samples
        temperature = config.temperature
        if temperature is None and getattr(prior, "sampler_config", None) is not None:
            temperature = getattr(prior.sampler(**ctx.options), "temperature", None)
        labels = ctx.sample_labels.repeat(-(-n // len(ctx.sample_labels)))[:n] if ctx.sample_labels is not None and len(ctx.sample_labels) else None
        g = torch.Generator(device=ctx.device).manual_seed(ctx.seed + 7_340_033)
        parts, evaluations = [], 0.0
        for start in range(0, n, ctx.batch_size):
            b = min(ctx.batch_size, n - start)
            batch_labels = labels[start : start + b].to(ctx.device) if labels is not None else None
            with ctx.autocast():
                grids = prior.sample_big(
                    b, (h, config.width_factor * w), g, labels=batch_labels, window_step=config.window_step, order=config.order,
                    temperature=temperature, steps=config.steps,
                )  # fmt: skip
            parts.append(grids.cpu())
            evaluations += getattr(prior, "last_nfe", 0) * b
        return torch.cat(parts), evaluations / n
