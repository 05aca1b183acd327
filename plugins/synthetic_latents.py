"""``synthetic_latents``: code grids from sources whose entropy is known exactly (known-truth benchmarks).

- ``iid``: every token from one categorical (drawn from a Dirichlet); entropy H(p).
- ``markov``: a first-order Markov chain in raster order started from its stationary distribution π; entropy per
  token [H(π) + (N−1) Σ_i π_i H(P_i)] / N.
- ``templates``: one of K random template grids, each token replaced by a uniform random code with probability ε.
  Entropy per token [log2 K + N·H(q) − H(K | X)] / N with H(K | X) estimated by exact posteriors over many draws
  (≈ 0 for well-separated templates). Precision (samples within a Hamming radius of some template) and recall
  (templates hit) are exactly computable; the radius is the smallest r with P(d ≤ r) ≥ 0.99 for true samples.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

import vqbench
from vqbench.config import in_unit_interval, positive
from vqbench.interfaces import LatentSource
from vqbench.io import fingerprint

VERSION = 1


@dataclass
class SyntheticLatentsConfig:
    kind: Literal["iid", "markov", "templates"] = "iid"
    h: int = 8
    w: int = 8
    codebook_size: int = 16
    count: int = 5000
    concentration: float = 0.5  # Dirichlet concentration of the categorical / Markov rows (lower: less entropy)
    num_templates: int = 8
    noise: float = 0.1  # templates: per-token replacement probability
    seed: int = 0  # the source itself (distribution parameters)

    def validate(self, key: str) -> None:
        for name in ("h", "w", "codebook_size", "count", "concentration", "num_templates"):
            positive(key, name, getattr(self, name))
        in_unit_interval(key, "noise", self.noise)


def entropy_bits(p: np.ndarray) -> float:
    p = p[p > 0]
    return float(-(p * np.log2(p)).sum())


def stationary(transition: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eig(transition.T)
    pi = np.real(vectors[:, np.argmin(np.abs(values - 1.0))])
    return pi / pi.sum()


def hamming_radius(n: int, flip: float, mass: float = 0.99) -> int:
    """Smallest r with P(Binomial(n, flip) ≤ r) ≥ mass."""
    total = 0.0
    for r in range(n + 1):
        total += math.comb(n, r) * flip**r * (1 - flip) ** (n - r)
        if total >= mass:
            return r
    return n


class SyntheticLatents(LatentSource):
    """Code grids from i.i.d., Markov or noisy-template sources with exactly known entropy."""

    Config = SyntheticLatentsConfig

    def __init__(self, config: SyntheticLatentsConfig):
        super().__init__(config)
        rng = np.random.default_rng([config.seed, VERSION])
        v = config.codebook_size
        self.probs = rng.dirichlet(np.full(v, config.concentration))
        self.transition = rng.dirichlet(np.full(v, config.concentration), size=v)
        self.templates = rng.integers(0, v, size=(config.num_templates, config.h, config.w))

    @property
    def codebook_size(self) -> int:
        return self.config.codebook_size

    @property
    def latent_shape(self) -> tuple[int, int]:
        return self.config.h, self.config.w

    def generate(self, count: int, seed: int) -> np.ndarray:
        rng = np.random.default_rng([self.config.seed, VERSION, seed])
        c, (h, w), v = self.config, self.latent_shape, self.codebook_size
        if c.kind == "iid":
            return rng.choice(v, size=(count, h, w), p=self.probs)
        if c.kind == "markov":
            cdf = self.transition.cumsum(axis=1)
            seq = np.empty((count, h * w), dtype=np.int64)
            seq[:, 0] = rng.choice(v, size=count, p=stationary(self.transition))
            for i in range(1, h * w):  # vectorised over grids
                seq[:, i] = np.minimum((cdf[seq[:, i - 1]] < rng.random((count, 1))).sum(axis=1), v - 1)
            return seq.reshape(count, h, w)
        which = rng.integers(0, c.num_templates, size=count)
        grids = self.templates[which].copy()
        noisy = rng.random(grids.shape) < c.noise
        grids[noisy] = rng.integers(0, v, size=int(noisy.sum()))
        return grids

    def _template_posterior_entropy(self, draws: int = 4000) -> float:
        """H(K | X) in bits, averaged over draws from the source with exact posteriors."""
        c, v, n = self.config, self.codebook_size, self.config.h * self.config.w
        x = self.generate(draws, seed=2**31 - 1).reshape(draws, n)  # a stream no split uses
        flat = self.templates.reshape(c.num_templates, n)
        match = (x[:, None, :] == flat[None]).sum(axis=2)  # draws × K
        log_same, log_diff = math.log((1 - c.noise) + c.noise / v), math.log(c.noise / v) if c.noise > 0 else -1e9
        loglik = match * log_same + (n - match) * log_diff
        post = np.exp(loglik - loglik.max(axis=1, keepdims=True))
        post /= post.sum(axis=1, keepdims=True)
        return float(np.mean([entropy_bits(p) for p in post]))

    def truth(self) -> dict[str, Any]:
        c, v, n = self.config, self.codebook_size, self.config.h * self.config.w
        if c.kind == "iid":
            return {"kind": "iid", "entropy_bits_per_token": entropy_bits(self.probs), "exact": True}
        if c.kind == "markov":
            pi = stationary(self.transition)
            rows = sum(pi[i] * entropy_bits(self.transition[i]) for i in range(v))
            return {"kind": "markov", "entropy_bits_per_token": float((entropy_bits(pi) + (n - 1) * rows) / n), "exact": True}
        same = (1 - c.noise) + c.noise / v
        q = np.array([same] + [c.noise / v] * (v - 1))
        posterior = self._template_posterior_entropy()
        flip = c.noise * (1 - 1 / v)
        return {
            "kind": "templates",
            "entropy_bits_per_token": (math.log2(c.num_templates) + n * entropy_bits(q) - posterior) / n,
            "exact": posterior < 1e-6,
            "posterior_entropy_bits": posterior,
            "templates": self.templates.tolist(),
            "template_radius": hamming_radius(n, flip),
            "template_radius_mass": 0.99,
        }

    def fingerprint(self) -> str:
        return fingerprint("synthetic_latents", VERSION, vars(self.config))


@vqbench.hookimpl
def vqbench_register_datasets(registry):
    registry.register("synthetic_latents", SyntheticLatents)
