"""Latent-level statistics every prior gets: token-histogram KL to the data, codebook usage, perplexity, unique rate."""

from __future__ import annotations

import math

import torch

from ..interfaces import Column, Metric


def histogram(codes: torch.Tensor, codebook_size: int) -> torch.Tensor:
    return torch.bincount(codes.flatten().long(), minlength=codebook_size).double()


def kl_bits(p_counts: torch.Tensor, q_counts: torch.Tensor, smoothing: float = 0.5) -> float:
    """KL(p ‖ q) in bits between two count histograms, with additive smoothing on q."""
    p = p_counts / p_counts.sum()
    q = (q_counts + smoothing) / (q_counts + smoothing).sum()
    nz = p > 0
    return float((p[nz] * (p[nz] / q[nz]).log2()).sum())


def perplexity(counts: torch.Tensor) -> float:
    p = counts[counts > 0] / counts.sum()
    return float(math.exp(-(p * p.log()).sum()))


def unique_rate(codes: torch.Tensor) -> float:
    """Fraction of distinct code grids among N grids (1.0: all differ; 1/N: every sample identical)."""
    return len(torch.unique(codes.flatten(1), dim=0)) / len(codes) if len(codes) else float("nan")


def codebook_stats(codes: torch.Tensor, codebook_size: int) -> dict[str, float]:
    counts = histogram(codes, codebook_size)
    return {"used_codes": float((counts > 0).sum()), "usage": float((counts > 0).double().mean()), "perplexity": perplexity(counts)}


class LatentStatsMetric(Metric):
    """Token-histogram KL of samples to held-out data, codebook usage, code perplexity and the fraction of distinct
    grids among the samples (mode collapse shows here before PRDC recall reaches 0)."""

    def columns(self, config) -> dict[str, Column]:
        return {
            "token_kl": Column("lower", "token KL (bits)", 4),
            "codebook_usage": Column("none", "codes used", 3),
            "sample_perplexity": Column("none", "code perplexity", 1),
            "unique_samples": Column("higher", "unique samples", 3),
        }

    def compute(self, ctx, config) -> dict[str, float]:
        v = ctx.prior.codebook_size
        sample_counts = histogram(ctx.samples, v)
        stats = codebook_stats(ctx.samples, v)
        return {
            "token_kl": kl_bits(histogram(ctx.test_codes, v), sample_counts),
            "codebook_usage": stats["usage"],
            "sample_perplexity": stats["perplexity"],
            "unique_samples": unique_rate(ctx.samples),
        }


class NLLMetric(Metric):
    """Negative log-likelihood (or ELBO bound) of held-out latents in bits per token; n/a when intractable."""

    def columns(self, config) -> dict[str, Column]:
        return {"nll_bpt": Column("lower", "NLL (bits/token)", 4), "nll_bpt_se": Column("none", "NLL s.e.", 4)}

    def compute(self, ctx, config) -> dict[str, float]:
        if not ctx.prior.supports_likelihood:
            return {"nll_bpt": float("nan"), "nll_bpt_se": float("nan")}
        return {"nll_bpt": ctx.held_out_nll(), "nll_bpt_se": ctx.held_out_nll_se()}
