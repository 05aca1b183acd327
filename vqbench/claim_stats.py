"""Statistics of the claims table: Holm's step-down adjustment over a benchmark's claims, and the power of the
paired one-sided t-test for the effect a paper reports."""

from __future__ import annotations

import math

import numpy as np


def holm(p_values: list[float]) -> list[float]:
    """Holm-adjusted p-values (same order; NaN entries are not tests and stay NaN): the i-th smallest of m p-values
    becomes max over j ≤ i of min(1, (m − j + 1)·p_(j))."""
    tested = [(p, i) for i, p in enumerate(p_values) if not math.isnan(p)]
    out = [math.nan] * len(p_values)
    running = 0.0
    for rank, (p, i) in enumerate(sorted(tested)):
        running = max(running, min(1.0, (len(tested) - rank) * p))
        out[i] = running
    return out


def t_power(standardised_effect: float, n: int, alpha: float) -> float:
    """Power of the one-sided one-sample t-test at level ``alpha`` with ``n`` paired differences whose true mean is
    ``standardised_effect`` standard deviations above 0 (noncentral t)."""
    from scipy import stats

    if n < 2 or not math.isfinite(standardised_effect):
        return math.nan
    critical = stats.t.ppf(1.0 - alpha, df=n - 1)
    return float(stats.nct.sf(critical, df=n - 1, nc=standardised_effect * math.sqrt(n)))


def seeds_for_power(standardised_effect: float, alpha: float, target: float = 0.8, most: int = 1000) -> int | None:
    """The fewest seeds (≥ 2) whose test reaches ``target`` power; None beyond ``most`` or for no effect."""
    if not math.isfinite(standardised_effect) or standardised_effect <= 0:
        return None
    low, high = 2, most
    if t_power(standardised_effect, high, alpha) < target:
        return None
    while low < high:  # power grows with n
        mid = (low + high) // 2
        low, high = (mid + 1, high) if t_power(standardised_effect, mid, alpha) < target else (low, mid)
    return low


def spread(values: np.ndarray) -> float:
    """Sample standard deviation (NaN with fewer than two values)."""
    return float(np.std(values, ddof=1)) if len(values) > 1 else math.nan
