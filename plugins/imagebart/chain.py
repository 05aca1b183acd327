"""ImageBART's forward process: multinomial diffusion that redraws each token uniformly over K codes.

Notation follows CompVis/imagebart: x0 is the clean grid, scales s = 1..n, model s is p_s(x_{s−1} | x_s). One step
redraws each token with probability β_s (a redraw may return the same code), so with ᾱ_s = ∏_{r≤s} (1 − β_r)

    q(x_s | x0)            = Cat(ᾱ_s·e(x0) + (1 − ᾱ_s)/K)
    q(x_{s−1}=k | x_s, x0) ∝ [ᾱ_{s−1}·1(k = x0) + (1 − ᾱ_{s−1})/K]·[α_s·1(k = x_s) + (1 − α_s)/K].

ᾱ_0 = 1 and ᾱ_n = 0 always (β_n = 1): x_n is exactly uniform, so the top model needs no input.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from vqbench.errors import ConfigError


def geometric_alphacum(n: int) -> list[float]:
    """β = 1/n, 1/(n−1), …, 1, i.e. ᾱ_s = 1 − s/n (s = 0..n)."""
    return [1.0 - s / n for s in range(n + 1)]


def check_alphacum(alphacum: Sequence[float], key: str) -> None:
    """ᾱ_0 = 1, ᾱ_n = 0, strictly decreasing, n ≥ 1."""
    values = list(alphacum)
    if len(values) < 2 or values[0] != 1.0 or values[-1] != 0.0:
        raise ConfigError(key, f"must run from 1 to 0 (ᾱ_0 = 1, ᾱ_n = 0, so x_n is uniform), got {values}")
    if any(b >= a for a, b in zip(values, values[1:])):
        raise ConfigError(key, f"must be strictly decreasing (every step redraws some tokens), got {values}")


class MultinomialChain:
    """The forward process for one schedule ``alphacum`` = [ᾱ_0 = 1, ᾱ_1, …, ᾱ_n = 0] over ``num_codes`` codes."""

    def __init__(self, alphacum: Sequence[float], num_codes: int):
        check_alphacum(alphacum, "alphacum")
        self.alphacum = torch.tensor(list(alphacum), dtype=torch.float64)
        self.num_codes = num_codes

    @property
    def scales(self) -> int:
        return len(self.alphacum) - 1

    def alpha(self, s: int) -> float:
        """α_s = 1 − β_s = ᾱ_s / ᾱ_{s−1} (s = 1..n; α_n = 0)."""
        return float(self.alphacum[s] / self.alphacum[s - 1])

    def beta(self, s: int) -> float:
        return 1.0 - self.alpha(s)

    def step_matrix(self, s: int) -> torch.Tensor:
        """Q_s[i, j] = q(x_s = j | x_{s−1} = i) = α_s·1(i = j) + (1 − α_s)/K (float64 K×K)."""
        k, a = self.num_codes, self.alpha(s)
        return a * torch.eye(k, dtype=torch.float64) + (1.0 - a) / k

    def _mix(self, codes: torch.Tensor, weight: float) -> torch.Tensor:
        """weight·e(codes) + (1 − weight)/K, as float32 probabilities B×N×K."""
        probs = torch.full((*codes.shape, self.num_codes), (1.0 - weight) / self.num_codes, device=codes.device)
        return probs.scatter_add_(-1, codes[..., None], torch.full_like(probs[..., :1], weight))

    def marginal(self, x0: torch.Tensor, s: int) -> torch.Tensor:
        """q(x_s | x0) per token: B×N×K."""
        return self._mix(x0, float(self.alphacum[s]))

    def posterior(self, x_s: torch.Tensor, x0: torch.Tensor, s: int) -> torch.Tensor:
        """q(x_{s−1} | x_s, x0) per token: B×N×K (rows sum to one)."""
        joint = self._mix(x0, float(self.alphacum[s - 1])) * self._mix(x_s, self.alpha(s))
        return joint / joint.sum(-1, keepdim=True)

    def transition_log_probs(self, x_s: torch.Tensor, s: int) -> torch.Tensor:
        """log(α_s·e(x_s) + (1 − α_s)/K): the one-step likelihood of x_s for each candidate x_{s−1} (B×N×K)."""
        return self._mix(x_s, self.alpha(s)).log()

    def redraw(self, codes: torch.Tensor, probability: float, generator: torch.Generator | None) -> torch.Tensor:
        """Redraw each token uniformly over the K codes with ``probability`` (``generator`` None: the global RNG)."""
        where = generator.device if generator is not None else codes.device
        hit = torch.rand(codes.shape, generator=generator, device=where).to(codes.device) < probability
        fresh = torch.randint(self.num_codes, codes.shape, generator=generator, device=where).to(codes.device)
        return torch.where(hit, fresh, codes)

    def step(self, x_prev: torch.Tensor, s: int, generator: torch.Generator | None) -> torch.Tensor:
        """x_s ~ q(x_s | x_{s−1})."""
        return self.redraw(x_prev, self.beta(s), generator)

    def trajectory(self, x0: torch.Tensor, generator: torch.Generator | None) -> list[torch.Tensor]:
        """[x0, x1, …, xn], one joint draw of the whole chain."""
        xs = [x0]
        for s in range(1, self.scales + 1):
            xs.append(self.step(xs[-1], s, generator))
        return xs


def equalised_alphacum(distances: Sequence[float], grid: Sequence[float], n: int) -> list[float]:
    """A schedule whose scales are evenly spaced in a perceptual distance.

    ``distances[i]`` is the mean distance between decodes of clean codes and of codes noised to ᾱ = ``grid[i]``
    (``grid`` decreasing from 1 to 0). Returns [1, ᾱ_1, …, ᾱ_{n−1}, 0] with d(ᾱ_s) = d(1) + (s/n)·(d(0) − d(1)), interpolating
    linearly in the (monotone envelope of the) measured curve."""
    g = torch.tensor(list(grid), dtype=torch.float64)
    if len(g) < 2 or g[0] != 1.0 or g[-1] != 0.0 or bool((g[1:] >= g[:-1]).any()):
        raise ValueError(f"grid must decrease strictly from 1 to 0, got {list(grid)}")
    d = torch.cummax(torch.tensor(list(distances), dtype=torch.float64), dim=0).values  # distance grows with noise
    if d[-1] <= d[0]:
        raise ValueError("the distance does not grow with noise: cannot equalise a schedule on it")
    out = [1.0]
    for s in range(1, n):
        target = d[0] + (d[-1] - d[0]) * s / n
        i = int(torch.searchsorted(d, target.reshape(1)).item())  # first grid point at or past the target
        i = min(max(i, 1), len(d) - 1)
        lo, hi = d[i - 1], d[i]
        frac = float((target - lo) / (hi - lo)) if hi > lo else 0.0
        out.append(float(g[i - 1] + frac * (g[i] - g[i - 1])))
    out.append(0.0)
    check_alphacum(out, "schedule")
    return out
