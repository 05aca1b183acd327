"""The papers' claims, checked against a results folder: for each claim the paired (same seed) effect of a
treatment row over a control row on one metric, its spread over seeds, and a verdict from one-sided t-tests.

``expect: better`` — the claim holds when the treatment is significantly better than the control; it does not hold
when it is significantly worse; otherwise the budget is inconclusive.
``expect: within`` — "degrades gently": the treatment is worse by less than ``margin`` (relative to the control);
it holds when the excess over that margin is significantly negative, and does not hold when it is significantly
positive.

Each claim tests both directions, so its p-value is the two-sided one (twice the smaller one-sided p); the claims of a
benchmark are one family, and verdicts rest on Holm-adjusted p-values, so that a benchmark of null claims gives a
definite verdict with probability ≤ α. With one seed, or the same effect at every seed, there is no test.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from .claim_stats import holm, seeds_for_power, spread, t_power
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
    quote: str = ""  # the paper's sentence, with its table or section
    caveat: str = ""  # what the verdict must be read with (e.g. a budget far below the paper's), shown beside it
    # the relative improvement the paper reports (treatment over control, + = better; a degradation is negative): the
    # effect the power column is computed for
    paper_effect: float | None = None

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


def verdict(claim: ClaimSection, pairs: pd.DataFrame, direction: str, p_adjusted: float | None = None) -> dict[str, Any]:
    """Effect (treatment − control, mean ± std over seeds), the tests' p-values, the power for the paper's effect and
    the verdict, decided on ``p_adjusted`` (the claim's two-sided p adjusted over its family; default: unadjusted)."""
    sign = -1.0 if direction == "lower" else 1.0
    diff = (pairs["treatment"] - pairs["control"]).to_numpy(dtype=float)
    control = pairs["control"].to_numpy(dtype=float)
    gain = sign * diff  # > 0: the treatment is better
    if claim.expect == "within":
        gain = gain + claim.margin * np.abs(control)  # > 0: worse by less than the margin
    p_holds, p_fails = one_sided_p(gain), one_sided_p(-gain)
    p_two = min(1.0, 2.0 * min(p_holds, p_fails)) if math.isfinite(p_holds) else math.nan
    control_mean = float(control.mean()) if len(control) else math.nan
    result = {
        "seeds": len(diff),
        "treatment_mean": float(pairs["treatment"].mean()) if len(pairs) else math.nan,
        "control_mean": control_mean,
        "effect_mean": float(diff.mean()) if len(diff) else math.nan,
        "effect_std": spread(diff),
        "effect_relative": float(diff.mean() / abs(control_mean)) if len(diff) and control_mean else math.nan,
        "p_holds": p_holds,
        "p_fails": p_fails,
        "p_two_sided": p_two,
    } | power_for_paper(claim, gain, control_mean)
    return result | decide(claim, result, p_two if p_adjusted is None else p_adjusted)


def decide(claim: ClaimSection, result: dict[str, Any], p_adjusted: float) -> dict[str, Any]:
    """The verdict on the adjusted p, the p-value of the verdict's own direction, and why a claim was not tested."""
    p_holds, p_fails = result["p_holds"], result["p_fails"]
    if result["seeds"] < 2:
        why = "no seed has results for both rows" if result["seeds"] == 0 else "one seed: no spread to test against"
        return {"p_adjusted": math.nan, "p_verdict": math.nan, "verdict": "inconclusive", "reason": why}
    if not math.isfinite(p_adjusted):
        return {
            "p_adjusted": math.nan,
            "p_verdict": math.nan,
            "verdict": "inconclusive",
            "reason": "the same effect at every seed: no spread to test against",
        }
    leaning = "holds" if p_holds <= p_fails else "does not hold"
    p_verdict = p_holds if leaning == "holds" else p_fails
    if p_adjusted < claim.alpha:
        return {"p_adjusted": p_adjusted, "p_verdict": p_verdict, "verdict": leaning, "reason": ""}
    return {
        "p_adjusted": p_adjusted, "p_verdict": p_verdict, "verdict": "inconclusive at this budget",
        "reason": f"leans to '{leaning}' (one-sided p {p_verdict:.3g}) but the adjusted p {p_adjusted:.3g} ≥ α = {claim.alpha}",
    }  # fmt: skip


def power_for_paper(claim: ClaimSection, gain: np.ndarray, control_mean: float) -> dict[str, Any]:
    """Power of this claim's test (unadjusted, each direction at α/2) at the observed spread, if the true effect were
    the one the paper reports; and the seeds that would reach power 0.8."""
    sd = spread(gain)
    if claim.paper_effect is None or not (sd > 0) or not math.isfinite(control_mean):
        return {"power": math.nan, "seeds_for_power_80": math.nan}
    expected = (claim.paper_effect + (claim.margin if claim.expect == "within" else 0.0)) * abs(control_mean)
    needed = seeds_for_power(expected / sd, claim.alpha / 2)
    return {"power": t_power(expected / sd, len(gain), claim.alpha / 2), "seeds_for_power_80": math.nan if needed is None else needed}


def describe_test(claim: ClaimSection, direction: str) -> str:
    better = "lower" if direction == "lower" else "higher"
    if claim.expect == "within":
        return f"paired t-tests: treatment worse than control by < {claim.margin:.0%} ({better} is better), α = {claim.alpha}, Holm over the claims"
    return f"paired t-tests: treatment {better} than control, α = {claim.alpha}, Holm over the claims"


def claims_table(claims: list[dict[str, Any]], long: pd.DataFrame, columns: dict[str, dict[str, Any]], out: Path) -> pd.DataFrame:
    """One row per claim, numbers in their own columns: effect, spread, raw and Holm-adjusted p, power, verdict."""
    parsed = [ClaimSection(**raw) for raw in claims]
    directions = [claim_direction(claim, columns) for claim in parsed]
    raw = [verdict(claim, paired(long, out, claim), d) for claim, d in zip(parsed, directions)]
    adjusted = holm([r["p_two_sided"] for r in raw])
    rows = []
    for claim, d, first, p_adj in zip(parsed, directions, raw, adjusted):
        result = first | decide(claim, first, p_adj)
        rows.append({
            "claim": claim.claim, "quote": claim.quote, "metric": claim.metric, "direction": d, "treatment": claim.treatment,
            "control": claim.control, "expect": claim.expect, "margin": claim.margin, "alpha": claim.alpha,
            "paper_effect": claim.paper_effect, "caveat": claim.caveat, **result, **size_ratios(long, claim), "test": describe_test(claim, d),
        })  # fmt: skip
    return pd.DataFrame(rows)


SIZE_TOLERANCE = 0.10  # rows whose parameters or training FLOPs differ by more than this are flagged
SIZES = {"parameters_m": "parameters", "train_gflops": "training FLOPs per grid"}


def size_ratios(long: pd.DataFrame, claim: ClaimSection) -> dict[str, Any]:
    """Treatment ÷ control parameters and training FLOPs, and a note when they differ by more than 10 %."""
    out: dict[str, Any] = {}
    notes = []
    for metric, what in SIZES.items():
        means = long[long["metric"] == metric].groupby("row")["value"].mean()
        treatment, control = float(means.get(claim.treatment, math.nan)), float(means.get(claim.control, math.nan))
        ratio = treatment / control if control > 0 else math.nan  # NaN: not counted, or a prior without a network
        out[f"{metric.removesuffix('_m')}_ratio"] = ratio
        if metric == "parameters_m":
            out["treatment_parameters_m"], out["control_parameters_m"] = treatment, control
        if math.isfinite(ratio) and abs(ratio - 1.0) > SIZE_TOLERANCE:
            notes.append(f"{ratio:.2f}× the control's {what}")
    out["size_note"] = f"not a matched comparison: the treatment has {' and '.join(notes)}" if notes else ""
    return out


def claim_direction(claim: ClaimSection, columns: dict[str, dict[str, Any]]) -> str:
    """``lower`` or ``higher``: the metric's declared better direction (validation refuses the others)."""
    direction = CURVE_METRICS.get(claim.metric) or columns.get(claim.metric, {}).get("direction")
    if direction not in ("lower", "higher"):
        raise ConfigError("claims", f"metric {claim.metric!r} declares no better direction ({direction!r}); a claim needs a column marked ↑ or ↓")
    return str(direction)


def claims_markdown(table: pd.DataFrame) -> pd.DataFrame:
    """The claims table as the report shows it."""

    def number(value: Any, fmt: str) -> str:
        return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, fmt)

    rows = []
    for r in table.to_dict("records"):
        effect = f"{r['effect_mean']:+.4g} ± {r['effect_std']:.2g}" if r["seeds"] > 1 else f"{r['effect_mean']:+.4g}"
        effect = f"{effect} ({r['effect_relative']:+.1%}), n = {r['seeds']}" if r["seeds"] else "no paired seeds"
        quote = f" — “{r['quote']}”" if r["quote"] else ""
        power = f"{number(r['power'], '.2f')} (0.8 at {number(r['seeds_for_power_80'], '.0f')} seeds)" if pd.notna(r["paper_effect"]) else "—"
        rows.append({
            "claim": f"{r['claim']}{quote}",
            "metric": r["metric"],
            "treatment vs control": f"{r['treatment']} ({r['treatment_mean']:.4g}) vs {r['control']} ({r['control_mean']:.4g})",
            "effect (mean ± std over seeds)": effect,
            "params (M)": f"{number(r['treatment_parameters_m'], '.3f')} vs {number(r['control_parameters_m'], '.3f')}",
            "test": r["test"],
            "p (two-sided, raw)": number(r["p_two_sided"], ".3g"),
            "p (verdict's direction)": number(r["p_verdict"], ".3g"),
            "p (Holm)": number(r["p_adjusted"], ".3g"),
            "power for the paper's effect": power,
            "verdict": "; ".join(filter(None, [f"{r['verdict']}{': ' + r['reason'] if r['reason'] else ''}", r["size_note"], r["caveat"]])),
        })  # fmt: skip
    return pd.DataFrame(rows)
