"""Statistics behind the claims table: Holm over a benchmark's claims, the p of the verdict's own direction, tests
that cannot run, and the power of the paired t-test for the paper's effect."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from vqbench.claim_stats import holm, seeds_for_power, t_power
from vqbench.errors import ConfigError
from vqbench.verdicts import ClaimSection, claim_direction, claims_markdown, claims_table, one_sided_p, size_ratios, verdict


def pairs(treatment, control) -> pd.DataFrame:
    return pd.DataFrame({"treatment": treatment, "control": control})


def test_holm_matches_a_hand_calculation():
    # sorted: 0.005·4 = 0.02, 0.01·3 = 0.03, 0.03·2 = 0.06, 0.04·1 = 0.04 → kept monotone: 0.06
    assert holm([0.01, 0.04, 0.03, 0.005, math.nan])[:4] == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert math.isnan(holm([0.01, math.nan])[1]) and holm([0.01, math.nan])[0] == pytest.approx(0.01)  # untested: not counted
    assert holm([0.6, 0.7]) == pytest.approx([1.0, 1.0])


def test_power_matches_the_textbook_value_and_a_simulation():
    assert t_power(1.0, 10, 0.05) == pytest.approx(0.8975, abs=5e-4)  # G*Power: one-sample t, d = 1, n = 10, one-tailed
    rng = np.random.default_rng(0)
    draws = rng.normal(0.8, 1.0, size=(20000, 5))
    rejected = (stats.ttest_1samp(draws, 0.0, axis=1, alternative="greater").pvalue < 0.05).mean()
    assert t_power(0.8, 5, 0.05) == pytest.approx(rejected, abs=0.012)  # 3.4 Monte Carlo standard errors
    needed = seeds_for_power(1.0, 0.05)
    assert needed == 8 and t_power(1.0, needed - 1, 0.05) < 0.8 <= t_power(1.0, needed, 0.05)
    assert seeds_for_power(0.0, 0.05) is None and seeds_for_power(0.01, 0.05, most=50) is None


def test_a_family_of_null_claims_rarely_gives_a_definite_verdict():
    """10 null claims at 3 seeds: without the adjustment some definite verdict comes 64 % of the time; with Holm over
    the two-sided p-values the family-wise rate stays at or below α."""
    rng = np.random.default_rng(1)
    definite = 0
    families = 1500
    for _ in range(families):
        gains = rng.normal(size=(10, 3))
        two_sided = [min(1.0, 2 * min(one_sided_p(g), one_sided_p(-g))) for g in gains]
        definite += any(p < 0.05 for p in holm(two_sided))
    assert definite / families <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / families)


def test_verdicts_rest_on_the_adjusted_p_and_show_their_own_direction():
    claim = ClaimSection("lower FID", "fid", "a", "b")
    worse = verdict(claim, pairs([11.0, 11.2, 10.9], [10.0, 10.1, 10.2]), "lower")
    assert worse["verdict"] == "does not hold" and worse["p_verdict"] == worse["p_fails"] < 0.05 < worse["p_holds"]
    assert worse["p_two_sided"] == pytest.approx(2 * worse["p_fails"])
    held_back = verdict(claim, pairs([11.0, 11.2, 10.9], [10.0, 10.1, 10.2]), "lower", p_adjusted=0.2)
    assert held_back["verdict"] == "inconclusive at this budget" and "does not hold" in held_back["reason"] and "0.2" in held_back["reason"]


def test_one_seed_or_no_spread_is_inconclusive_and_says_why():
    claim = ClaimSection("lower FID", "fid", "a", "b")
    one = verdict(claim, pairs([9.0], [10.0]), "lower")
    assert one["verdict"] == "inconclusive" and "one seed" in one["reason"] and math.isnan(one["p_verdict"])
    flat = verdict(claim, pairs([9.0, 9.0, 9.0], [10.0, 10.0, 10.0]), "lower")
    assert flat["verdict"] == "inconclusive" and "same effect at every seed" in flat["reason"]


def test_power_is_computed_for_the_papers_effect_at_the_observed_spread():
    claim = ClaimSection("lower FID", "fid", "a", "b", paper_effect=0.1)  # the paper: 10 % lower FID
    result = verdict(claim, pairs([9.5, 9.0, 9.8], [10.0, 10.0, 10.0]), "lower")
    sd = np.std([0.5, 1.0, 0.2], ddof=1)
    assert result["power"] == pytest.approx(t_power(1.0 / sd, 3, 0.025))
    assert result["seeds_for_power_80"] == seeds_for_power(1.0 / sd, 0.025)
    assert math.isnan(verdict(ClaimSection("x", "fid", "a", "b"), pairs([9.5, 9.0], [10.0, 10.0]), "lower")["power"])


def test_a_metric_without_a_better_direction_is_an_error():
    with pytest.raises(ConfigError, match="'unique'.*no better direction"):
        claim_direction(ClaimSection("x", "unique", "a", "b"), {"unique": {"direction": "none"}})
    assert claim_direction(ClaimSection("x", "recall", "a", "b"), {"recall": {"direction": "higher"}}) == "higher"


def _long(values: dict[tuple[str, str], list[float]]) -> pd.DataFrame:
    return pd.DataFrame([{"row": row, "metric": metric, "seed": s, "value": v} for (row, metric), vs in values.items() for s, v in enumerate(vs)])


def test_rows_of_different_size_are_flagged():
    claim = ClaimSection("x", "fid", "big", "small")
    long = _long(
        {
            ("big", "parameters_m"): [2.2, 2.2],
            ("small", "parameters_m"): [1.0, 1.0],
            ("big", "train_gflops"): [1.05],
            ("small", "train_gflops"): [1.0],
        }
    )
    sizes = size_ratios(long, claim)
    assert sizes["parameters_ratio"] == pytest.approx(2.2) and sizes["train_gflops_ratio"] == pytest.approx(1.05)
    assert sizes["size_note"] == "not a matched comparison: the treatment has 2.20× the control's parameters"
    unroll = _long(
        {("big", "parameters_m"): [1.0], ("small", "parameters_m"): [1.0], ("big", "train_gflops"): [1.5], ("small", "train_gflops"): [1.0]}
    )
    assert "1.50× the control's training FLOPs per grid" in size_ratios(unroll, claim)["size_note"]
    matched = _long({("big", "parameters_m"): [1.05], ("small", "parameters_m"): [1.0]})
    assert size_ratios(matched, claim)["size_note"] == ""


def test_the_report_row_carries_quote_caveat_size_note_and_power(tmp_path):
    long = _long(
        {("a", "fid"): [9.0, 9.2, 8.9], ("b", "fid"): [10.0, 10.1, 10.2], ("a", "parameters_m"): [2.0] * 3, ("b", "parameters_m"): [1.0] * 3}
    )
    long["cell"] = long["row"] + long["seed"].astype(str)
    claim = {"claim": "lower FID", "metric": "fid", "treatment": "a", "control": "b", "quote": "Q.", "caveat": "short budget", "paper_effect": 0.1}
    table = claims_table([claim], long, {"fid": {"direction": "lower"}}, tmp_path)
    shown = claims_markdown(table).iloc[0]
    assert shown["claim"] == "lower FID — “Q.”"
    assert shown["verdict"] == "holds; not a matched comparison: the treatment has 2.00× the control's parameters; short budget"
    assert shown["p (Holm)"] == f"{table['p_adjusted'][0]:.3g}" and shown["power for the paper's effect"].startswith(f"{table['power'][0]:.2f}")
    assert shown["p (two-sided, raw)"] == f"{table['p_two_sided'][0]:.3g}" and shown["params (M)"] == "2.000 vs 1.000"


def test_rows_without_results_and_claims_without_a_paper_effect_read_plainly(tmp_path):
    long = _long({("a", "fid"): [9.0, 9.2, 8.9], ("b", "fid"): [10.0, 10.1, 10.2]})
    long["cell"] = long["row"] + long["seed"].astype(str)
    claims = [{"claim": "x", "metric": "fid", "treatment": "a", "control": "b"}, {"claim": "y", "metric": "fid", "treatment": "a", "control": "c"}]
    shown = claims_markdown(claims_table(claims, long, {"fid": {"direction": "lower"}}, tmp_path))
    assert shown["power for the paper's effect"].tolist() == ["—", "—"]
    assert shown["params (M)"].tolist() == ["— vs —", "— vs —"]  # no parameter counts recorded
    assert shown["effect (mean ± std over seeds)"][1] == "no paired seeds"
    assert shown["verdict"][1] == "inconclusive: no seed has results for both rows"
