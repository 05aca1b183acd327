"""``absorbing``: absorbing (masking) diffusion over code grids (Unleashing Transformers §3), with two samplers of
the same network: step-skipping unmasking (``absorbing``) and confidence-ordered unmasking (``maskgit``).

Training masks x0 at a time step t ~ U{1..T} (``random``: each token with probability t/T; ``fixed``: exactly
round(t/T·N) tokens) and predicts x0 at the masked positions. The NLL is the ELBO in bits per token.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

import vqbench
from vqbench.backbones import build_backbone, parse_backbone
from vqbench.config import positive
from vqbench.errors import ConfigError
from vqbench.interfaces import Prior
from vqbench.sampling import filter_logits, gumbel_noise, sample_categorical

from .absorbing_big import BigSampling

DEFAULT_BACKBONE = {"name": "transformer", "dim": 256, "depth": 8, "heads": 8, "dim_head": 32}


@dataclass
class AbsorbingSampler:
    sampler: Literal["absorbing", "maskgit"] = "absorbing"
    steps: int | None = None  # absorbing sampler: evenly spaced time steps (None: all total_steps)
    # absorbing sampler: ``scheduled`` reveals the count the mask schedule implies at each step; ``bernoulli`` is
    # Unleashing Transformers' own sampler: at step t = steps … 1 each masked token is revealed with probability 1/t
    unmask: Literal["scheduled", "bernoulli"] = "scheduled"
    temperature: float = 1.0
    maskgit_steps: int = 12
    schedule: Literal["cosine", "arccos", "linear"] = "cosine"  # MaskGIT: fraction still masked after each step
    choice_temperature: float = 4.5  # MaskGIT: Gumbel noise on confidences, annealed linearly to 0
    top_k: int | None = None

    def validate(self, key: str) -> None:
        positive(key, "temperature", self.temperature)
        positive(key, "maskgit_steps", self.maskgit_steps)
        positive(key, "steps", self.steps)
        positive(key, "top_k", self.top_k)
        positive(key, "choice_temperature", self.choice_temperature, allow_zero=True)


@dataclass
class AbsorbingConfig(AbsorbingSampler):
    backbone: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_BACKBONE))
    total_steps: int = 256
    mask_schedule: Literal["random", "fixed"] = "random"
    loss: Literal["reweighted_elbo", "elbo", "mlm"] = "reweighted_elbo"
    elbo_exact_max: int = 64  # NLL: every t for every grid when total_steps ≤ this ...
    elbo_draws: int = 16  # ... else this many stratified draws of t per grid

    def validate(self, key: str) -> None:
        super().validate(key)
        positive(key, "total_steps", self.total_steps)
        positive(key, "elbo_exact_max", self.elbo_exact_max, allow_zero=True)
        if self.elbo_draws < 2:
            raise ConfigError(f"{key}.elbo_draws", f"must be at least 2 (stratified draws of t; two give a standard error), got {self.elbo_draws}")
        if self.steps is not None and self.steps > self.total_steps:
            raise ConfigError(f"{key}.steps", f"must be ≤ total_steps ({self.total_steps}), got {self.steps}")
        parse_backbone(self.backbone, f"{key}.backbone", "transformer")


def time_grid(steps: int, total: int) -> list[int]:
    """Evenly spaced time steps from ``total`` down to 0 (``steps`` transitions; steps = total gives T, T−1, …, 0)."""
    return sorted({int(round(t)) for t in np.linspace(total, 0, steps + 1)}, reverse=True)


def masked_at(t: int, total: int, n: int) -> int:
    """How many of n tokens are masked at time t."""
    return int(round(n * t / total))


def stratified_stderr(terms: torch.Tensor, sizes: torch.Tensor) -> torch.Tensor:
    """Standard error per row of the stratified estimate ``terms @ sizes`` (one draw per stratum, B×K).

    Collapsed strata: neighbouring strata are grouped in pairs (the last group holds three when K is odd) and each
    group's variance is estimated from the spread of its per-unit draws, v_g = N_g² s_g² / m_g — conservative, as
    the differences between neighbouring strata count as noise. NaN when K = 1."""
    b, k = terms.shape
    if k < 2:
        return torch.full((b,), float("nan"), device=terms.device)
    groups = torch.arange(k, device=terms.device).div(2, rounding_mode="floor").clamp(max=k // 2 - 1)
    var = terms.new_zeros(b)
    for g in range(k // 2):
        members = groups == g
        var += sizes[members].sum() ** 2 * terms[:, members].var(dim=1) / members.sum()
    return var.sqrt()


def maskgit_ratio(progress: float, schedule: str) -> float:
    """Fraction still masked after a fraction ``progress`` of the MaskGIT steps."""
    if schedule == "cosine":
        return math.cos(math.pi / 2 * progress)
    if schedule == "arccos":
        return math.acos(progress) / (math.pi / 2)
    return 1.0 - progress


def rank_mask(scores: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """True at the ``counts[b]`` lowest-scoring positions of each row (ties broken by position)."""
    ranks = scores.argsort(dim=1, stable=True).argsort(dim=1)
    return ranks < counts[:, None]


class AbsorbingPrior(BigSampling, Prior):
    """Absorbing diffusion with a bidirectional transformer; reweighted ELBO training; ELBO likelihood; ``sample_big``
    draws grids larger than the training grid from overlapping windows (``absorbing_big``)."""

    Config = AbsorbingConfig
    sampler_config = AbsorbingSampler
    supports_inpainting = True
    supports_likelihood = True

    def __init__(self, config: AbsorbingConfig, codebook_size: int, latent_shape: tuple[int, int], num_classes: int = 0):
        super().__init__(config, codebook_size, latent_shape, num_classes)
        self.mask_token = codebook_size
        self.net = build_backbone(config.backbone, "backbone", "transformer", codebook_size + 1, codebook_size, latent_shape, num_classes)

    # ---- training and likelihood ------------------------------------------------------------------------------
    def mask_at(self, x0: torch.Tensor, t: torch.Tensor, generator: torch.Generator | None = None, schedule: str | None = None) -> torch.Tensor:
        """Mask (True = absorbed) for grids x0 (B×N) at times t (B,), following ``schedule`` (default
        ``mask_schedule``). ``fixed`` masks round(t/T·N) tokens, at least one."""
        device = generator.device if generator is not None else x0.device
        scores = torch.rand(x0.shape, generator=generator, device=device).to(x0.device)
        if (schedule or self.config.mask_schedule) == "random":
            return scores < (t.float() / self.config.total_steps)[:, None]
        counts = torch.round(t.float() / self.config.total_steps * x0.shape[1]).long().clamp(min=1)
        return rank_mask(scores, counts)

    def masked_ce(
        self, x0: torch.Tensor, t: torch.Tensor, labels=None, generator=None, schedule: str | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(summed cross-entropy in nats over masked tokens, number masked), per grid."""
        mask = self.mask_at(x0, t, generator, schedule)
        logits = self.net(torch.where(mask, self.mask_token, x0), labels)
        ce = F.cross_entropy(logits.float().transpose(1, 2), x0, reduction="none")
        return (ce * mask).sum(dim=1), mask.sum(dim=1)

    def loss(self, codes: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        x0 = codes.flatten(1)
        T, n = self.config.total_steps, x0.shape[1]
        t = torch.randint(1, T + 1, (x0.shape[0],), device=x0.device)
        ce, count = self.masked_ce(x0, t, labels)
        if self.config.loss == "mlm":
            return (ce / count.clamp(min=1)).mean() / math.log(2)
        weight = T / t.float() if self.config.loss == "elbo" else (T - t + 1).float() / T  # Eq. 6 (1/t ÷ p(t)) / Eq. 7
        return (weight * ce).mean() / (n * math.log(2))

    def nll(self, codes: torch.Tensor, generator: torch.Generator | None = None, labels: torch.Tensor | None = None) -> torch.Tensor:
        """ELBO in bits per token, Σ_t E[(1/t) Σ_masked −log p(x0_i | x_t)] under the ``random`` schedule (the only
        one for which the sum is a bound), estimated per grid by stratified sampling of t.

        The T time steps are cut into K contiguous strata (K = T when T ≤ ``elbo_exact_max``: the exact sum over t,
        else K = ``elbo_draws``); every grid draws its own t uniformly inside each stratum and its own masks, and
        each draw is weighted by its stratum's size, which makes the estimate unbiased. ``self.nll_stderr`` holds
        each grid's standard error (collapsed-strata estimate: strata grouped in pairs, conservative)."""
        x0 = codes.flatten(1)
        T, (b, n) = self.config.total_steps, x0.shape
        exact = self.config.elbo_exact_max >= T
        k = T if exact else min(self.config.elbo_draws, T)
        edges = torch.tensor([(i * T) // k for i in range(k + 1)], device=x0.device)  # stratum i: t in (edges[i], edges[i+1]]
        sizes = (edges[1:] - edges[:-1]).float()
        device = generator.device if generator is not None else x0.device
        u = torch.rand((b, k), generator=generator, device=device).to(x0.device)
        times = edges[:-1] + 1 + (u * sizes).long().clamp(max=(sizes.long() - 1))  # B×K
        terms = torch.stack([self.masked_ce(x0, times[:, i], labels, generator, schedule="random")[0] / times[:, i] for i in range(k)], dim=1) / (
            n * math.log(2)
        )  # B×K: per-draw (1/t)·CE in bits per token
        self.nll_stderr = stratified_stderr(terms, sizes)
        if exact:
            self.nll_note = f"ELBO, exact sum over all {T} time steps per grid (random masks)"
        else:
            self.nll_note = f"ELBO, Monte Carlo: {k} stratified time steps of {T} per grid (random masks)"
        return terms @ sizes

    # ---- sampling -----------------------------------------------------------------------------------------------
    def sample(self, n, latent_shape, generator, labels=None, **opts) -> torch.Tensor:
        self.check_shape(latent_shape)
        x = torch.full((n, latent_shape[0] * latent_shape[1]), self.mask_token, device=self.net.to_logits.weight.device)
        return self.unmask(x, generator, labels, **opts).view(n, *self.latent_shape)

    def inpaint(self, codes, keep_mask, generator, labels=None, **opts) -> torch.Tensor:
        """Absorb the tokens to regenerate and denoise from the time step matching how many are masked."""
        x = torch.where(keep_mask.flatten(1).to(codes.device), codes.flatten(1), self.mask_token)
        return self.unmask(x, generator, labels, **opts).view_as(codes)

    @torch.no_grad()
    def unmask(self, x: torch.Tensor, generator: torch.Generator, labels=None, **opts) -> torch.Tensor:
        """Fill every [MASK] of x (B×N) with the configured sampler; other tokens are never changed."""
        cfg = self.sampler(**opts)
        self.trace: list[int] = []  # masked tokens per grid after each network evaluation (for tests and plots)
        run = self._maskgit if cfg.sampler == "maskgit" else self._bernoulli if cfg.unmask == "bernoulli" else self._absorbing
        evaluations = run(x, generator, labels, cfg)
        self.last_nfe = evaluations
        return x

    def _predict(self, x, labels, cfg, rows: torch.Tensor | None = None) -> torch.Tensor:
        """Filtered, tempered logits of every position (B×N×V), or of the ``rows`` positions only (K×V)."""
        logits = self.net(x, labels) if rows is None else self.net.logits_at(x, rows, labels)
        return filter_logits(logits.float() / cfg.temperature, top_k=cfg.top_k)

    def _absorbing(self, x, generator, labels, cfg) -> int:
        """Step skipping: at each evenly spaced time step unmask the number of tokens the schedule implies, at
        random masked positions, with codes drawn from the network's prediction of x0. The time grid runs from each
        grid's start time (T when sampling; when inpainting, the first t whose schedule masks as many tokens as
        are to be regenerated) down to 0 in ``steps`` even transitions."""
        T, n = self.config.total_steps, x.shape[1]
        masked = x == self.mask_token
        start = masked.sum(dim=1)
        scheduled = torch.round(torch.arange(T + 1, device=x.device) * n / T).long()  # masked_at(t) for t = 0..T
        t_start = torch.searchsorted(scheduled, start).clamp(max=T).float()
        steps = min(cfg.steps or T, T)
        evaluations = 0
        for j in range(steps):
            t_next = torch.round(t_start * (steps - 1 - j) / steps).long()
            target = torch.minimum(start, scheduled[t_next])
            counts = masked.sum(dim=1) - target
            if not counts.any():  # several grid times round to the same masked count
                continue
            scores = torch.rand(x.shape, generator=generator, device=generator.device).to(x.device)
            reveal = rank_mask(scores.masked_fill(~masked, 2.0), counts) & masked
            self._reveal(x, reveal, masked, labels, cfg, generator)
            evaluations += 1
        return evaluations

    def _reveal(self, x, reveal, masked, labels, cfg, generator) -> None:
        """One network evaluation: draw the ``reveal`` positions of x from its prediction of x0 (x and ``masked``
        updated in place)."""
        logits = self._predict(x, labels, cfg, reveal)  # only the positions drawn this step
        x[reveal] = sample_categorical(logits, 1.0, generator).to(x.device)
        masked &= ~reveal
        self.trace.append(int(masked.sum(dim=1).max()))

    def _bernoulli(self, x, generator, labels, cfg) -> int:
        """Unleashing Transformers' sampler: for t = S … 1 (S = ``steps``, default T) every still-masked token is
        revealed with probability 1/t, so the count per step is random and everything is revealed at t = 1. Steps
        that reveal nothing skip the network (the result is the same)."""
        masked = x == self.mask_token
        evaluations = 0
        for t in range(cfg.steps or self.config.total_steps, 0, -1):
            u = torch.rand(x.shape, generator=generator, device=generator.device).to(x.device)
            reveal = masked & (u < 1.0 / t)
            if not reveal.any():
                continue
            self._reveal(x, reveal, masked, labels, cfg, generator)
            evaluations += 1
        return evaluations

    def _maskgit(self, x, generator, labels, cfg) -> int:
        """MaskGIT: sample every masked token, keep the most confident (with annealed Gumbel noise), re-mask the rest
        so that the masked fraction follows the schedule."""
        masked = x == self.mask_token
        start = masked.sum(dim=1)
        steps = cfg.maskgit_steps
        evaluations = 0
        for step in range(steps):
            if not masked.any():
                break
            logits = self._predict(x, labels, cfg)
            sampled = sample_categorical(logits, 1.0, generator).to(x.device)
            confidence = torch.log_softmax(logits, dim=-1).gather(-1, sampled[..., None])[..., 0]
            progress = (step + 1) / steps
            noise = cfg.choice_temperature * (1.0 - progress) * gumbel_noise(x.shape, generator, x.device)
            confidence = (confidence + noise).masked_fill(~masked, float("inf"))
            still = torch.floor(start.float() * maskgit_ratio(progress, cfg.schedule)).long() if step + 1 < steps else torch.zeros_like(start)
            if step + 1 < steps:  # the reference's guard: ≥ 1 token revealed this step and ≥ 1 left for the next
                still = torch.maximum(torch.ones_like(still), torch.minimum(still, masked.sum(dim=1) - 1))
            still = still.clamp(min=0)
            remask = rank_mask(confidence, still) & masked
            x[masked & ~remask] = sampled[masked & ~remask]
            masked = remask
            evaluations += 1
            self.trace.append(int(masked.sum(dim=1).max()))
        return evaluations


@vqbench.hookimpl
def vqbench_register_priors(registry):
    registry.register("absorbing", AbsorbingPrior)


@vqbench.hookimpl
def vqbench_conformance_cases():
    from vqbench.testing import TRANSFORMER, PriorCase  # test-only (needs pytest), so imported here

    return [
        PriorCase(
            "absorbing",
            {"backbone": TRANSFORMER, "total_steps": 8, "steps": 8},
            conditional=True,
            nfe=lambda opts: opts["steps"],
            nfe_opts={"steps": 4},
            commits=True,
        ),
        PriorCase(
            "absorbing",
            {"backbone": TRANSFORMER, "total_steps": 8, "unmask": "bernoulli"},
            conditional=True,
            commits=True,
            id="absorbing-bernoulli",
        ),
        PriorCase(
            "absorbing",
            {"backbone": TRANSFORMER, "total_steps": 8, "sampler": "maskgit", "maskgit_steps": 6},
            conditional=True,
            nfe=lambda opts: opts["maskgit_steps"],
            nfe_opts={"maskgit_steps": 4},
            commits=True,
            id="absorbing-maskgit",
        ),
    ]
