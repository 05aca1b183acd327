"""The papers' claims, checked against a results folder: for each claim the paired (same seed) effect of a
treatment row over a control row on one metric, its spread over seeds, and a verdict from a one-sided t-test.

``expect: better`` — the claim holds when the treatment is better than the control at level ``alpha``; it does not
hold when it is significantly worse; otherwise the budget is inconclusive.
``expect: within`` — "degrades gently": the treatment is worse by less than ``margin`` (relative to the control);
it holds when the excess over that margin is significantly negative, and does not hold when it is significantly
positive.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from .config import positive
from .errors import ConfigError

CURVE_METRICS = {"val_nll_mean": "lower"}  # from train_curve.csv: mean held-out NLL over the evaluations after step 0


@dataclass
class ClaimSection:
    claim: str  # the statement and its source, e.g. "Reweighted ELBO converges faster (Unleashing Fig. 6)"
    metric: str  # a report column (fid, recall, nll_bpt, inpaint_upper_lpips, ...) or val_nll_mean
    treatment: str  # report row expected to be better (``label`` or ``label [variant]``)
    control: str  # report row it is compared with
    expect: Literal["better", "within"] = "better"
    margin: float = 0.0  # within: largest relative degradation that still counts as "gentle"
    alpha: float = 0.05

    def validate(self, key: str) -> None:
        positive(key, "margin", self.margin, allow_zero=True)
        if not 0.0 < self.alpha < 0.5:
            raise ConfigError(f"{key}.alpha", f"must lie in (0, 0.5), got {self.alpha!r}")


def check_claims(claims: list[ClaimSection], rows: list[str], columns: dict[str, str]) -> None:
    """Fail before any work when a claim names a row the plan lacks or a metric no enabled metric reports."""
    for i, claim in enumerate(claims):
        for side in ("treatment", "control"):
            row = getattr(claim, side)
            if row not in rows:
                raise ConfigError(f"claims[{i}].{side}", f"no row {row!r} in this benchmark; rows: {', '.join(rows)}")
        if claim.metric not in columns and claim.metric not in CURVE_METRICS:
            known = ", ".join([*columns, *CURVE_METRICS])
            raise ConfigError(f"claims[{i}].metric", f"{claim.metric!r} is not reported by the enabled metrics; known: {known}")
        if claim.metric in CURVE_METRICS or columns.get(claim.metric) in ("lower", "higher"):
            continue
        raise ConfigError(f"claims[{i}].metric", f"{claim.metric!r} has no better direction; pick a column marked ↑ or ↓")


def one_sided_p(values: np.ndarray) -> float:
    """P-value of the one-sided t-test of mean(values) > 0 (NaN with fewer than two values or no spread)."""
    from scipy import stats

    n = len(values)
    if n < 2 or not np.std(values, ddof=1) > 0:
        return math.nan
    t = values.mean() / (values.std(ddof=1) / math.sqrt(n))
    return float(stats.t.sf(t, df=n - 1))


def curve_value(folder: Path, metric: str) -> float:
    path = folder / "train_curve.csv"
    if not path.is_file():
        return math.nan
    val = pd.read_csv(path).dropna(subset=["val_nll_bpt"])
    val = val[val["step"] > 0]
    return float(val["val_nll_bpt"].mean()) if len(val) else math.nan


def paired(long: pd.DataFrame, out: Path, claim: ClaimSection) -> pd.DataFrame:
    """Per seed: treatment and control values of the claim's metric (seeds both rows have)."""
    if claim.metric in CURVE_METRICS:
        cells = long.drop_duplicates("cell")[["cell", "row", "seed"]]
        frame = cells.assign(value=[curve_value(out / "runs" / c, claim.metric) for c in cells["cell"]])
    else:
        frame = long[long["metric"] == claim.metric]
    by_row = frame.pivot_table(index="seed", columns="row", values="value", aggfunc="mean")
    if claim.treatment not in by_row or claim.control not in by_row:
        return pd.DataFrame(columns=["treatment", "control"])
    return by_row[[claim.treatment, claim.control]].set_axis(["treatment", "control"], axis=1).dropna()


def verdict(claim: ClaimSection, pairs: pd.DataFrame, direction: str) -> dict[str, Any]:
    """Effect (treatment − control, mean ± std over seeds), the test's p-values and the verdict."""
    sign = -1.0 if direction == "lower" else 1.0
    diff = (pairs["treatment"] - pairs["control"]).to_numpy(dtype=float)
    gain = sign * diff  # > 0: the treatment is better
    if claim.expect == "within":
        gain = gain + claim.margin * np.abs(pairs["control"].to_numpy(dtype=float))  # > 0: worse by less than the margin
    p_holds, p_fails = one_sided_p(gain), one_sided_p(-gain)
    if p_holds < claim.alpha:
        outcome = "holds"
    elif p_fails < claim.alpha:
        outcome = "does not hold"
    else:
        outcome = "inconclusive at this budget"
    control_mean = float(pairs["control"].mean()) if len(pairs) else math.nan
    return {
        "seeds": len(diff),
        "treatment_mean": float(pairs["treatment"].mean()) if len(pairs) else math.nan,
        "control_mean": control_mean,
        "effect_mean": float(diff.mean()) if len(diff) else math.nan,
        "effect_std": float(diff.std(ddof=1)) if len(diff) > 1 else math.nan,
        "effect_relative": float(diff.mean() / abs(control_mean)) if len(diff) and control_mean else math.nan,
        "p_holds": p_holds,
        "p_fails": p_fails,
        "verdict": outcome,
    }


def describe_test(claim: ClaimSection, direction: str) -> str:
    better = "lower" if direction == "lower" else "higher"
    if claim.expect == "within":
        return f"one-sided paired t-test: treatment worse than control by < {claim.margin:.0%} ({better} is better), α = {claim.alpha}"
    return f"one-sided paired t-test: treatment {better} than control, α = {claim.alpha}"


def claims_table(claims: list[dict[str, Any]], long: pd.DataFrame, columns: dict[str, dict[str, Any]], out: Path) -> pd.DataFrame:
    """One row per claim: statement, comparison, effect with its spread, test and verdict."""
    rows = []
    for raw in claims:
        claim = ClaimSection(**raw)
        direction = CURVE_METRICS.get(claim.metric) or columns.get(claim.metric, {}).get("direction", "lower")
        result = verdict(claim, paired(long, out, claim), direction)
        effect = f"{result['effect_mean']:+.4g} ± {result['effect_std']:.2g}" if result["seeds"] > 1 else f"{result['effect_mean']:+.4g}"
        rows.append({
            "claim": claim.claim,
            "metric": claim.metric,
            "treatment vs control": f"{claim.treatment} ({result['treatment_mean']:.4g}) vs {claim.control} ({result['control_mean']:.4g})",
            "effect (mean ± std over seeds)": f"{effect} ({result['effect_relative']:+.1%}), n = {result['seeds']}",
            "test": describe_test(claim, direction),
            "p": f"{result['p_holds']:.3g}",
            "verdict": result["verdict"],
        })  # fmt: skip
    return pd.DataFrame(rows)
