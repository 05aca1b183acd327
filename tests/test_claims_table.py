"""Claims checked in the report: paired effects over seeds, one-sided t-test verdicts, validation of claim keys."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats

from vqbench.claim_stats import holm
from vqbench.cli import main
from vqbench.errors import ConfigError
from vqbench.verdicts import ClaimSection, check_claims, one_sided_p, verdict


def pairs(treatment, control) -> pd.DataFrame:
    return pd.DataFrame({"treatment": treatment, "control": control})


def test_one_sided_p_is_the_t_test_of_a_positive_mean():
    values = np.array([0.3, 0.1, 0.5, 0.2])
    assert one_sided_p(values) == pytest.approx(stats.ttest_1samp(values, 0.0, alternative="greater").pvalue)
    assert np.isnan(one_sided_p(np.array([1.0])))  # one seed: no spread, no test


def test_better_claims_hold_fail_or_stay_inconclusive():
    claim = ClaimSection("lower FID", "fid", "a", "b")
    assert verdict(claim, pairs([9.0, 9.2, 8.9], [10.0, 10.1, 10.2]), "lower")["verdict"] == "holds"
    assert verdict(claim, pairs([11.0, 11.2, 10.9], [10.0, 10.1, 10.2]), "lower")["verdict"] == "does not hold"
    assert verdict(claim, pairs([9.0, 11.0, 10.1], [10.0, 10.1, 10.2]), "lower")["verdict"] == "inconclusive at this budget"
    higher = verdict(ClaimSection("more recall", "recall", "a", "b"), pairs([0.6, 0.62, 0.61], [0.5, 0.5, 0.52]), "higher")
    assert higher["verdict"] == "holds" and higher["effect_mean"] == pytest.approx(0.1033333)


def test_within_claims_compare_the_degradation_with_the_margin():
    claim = ClaimSection("degrades gently", "fid", "50 steps", "256 steps", expect="within", margin=0.1)
    gentle = verdict(claim, pairs([10.4, 10.6, 10.5], [10.0, 10.1, 10.0]), "lower")
    assert gentle["verdict"] == "holds" and gentle["effect_relative"] == pytest.approx((1.4 / 3) / (30.1 / 3))
    assert verdict(claim, pairs([13.0, 13.5, 12.8], [10.0, 10.1, 10.0]), "lower")["verdict"] == "does not hold"


def test_claims_naming_missing_rows_or_metrics_are_refused():
    columns = {"fid": "lower", "unique": "none"}
    with pytest.raises(ConfigError, match=r"claims\[0\]\.control.*'c'"):
        check_claims([ClaimSection("x", "fid", "a", "c")], ["a", "b"], columns)
    with pytest.raises(ConfigError, match=r"claims\[0\]\.metric.*'fdi'"):
        check_claims([ClaimSection("x", "fdi", "a", "b")], ["a", "b"], columns)
    with pytest.raises(ConfigError, match=r"claims\[0\]\.metric.*direction"):
        check_claims([ClaimSection("x", "unique", "a", "b")], ["a", "b"], columns)
    check_claims([ClaimSection("x", "val_nll_mean", "a", "b")], ["a", "b"], columns)


def test_a_run_reports_its_claims_with_verdicts(tmp_path):
    bench = {
        "name": "claims_smoke",
        "dataset": {"name": "synthetic_latents", "params": {"kind": "iid", "h": 4, "w": 4, "codebook_size": 8, "count": 400}, "test_fraction": 0.25},
        "priors": [{"name": "independent", "sweep": {"temperature": [0.3, 1.0]}}],
        "seeds": [0, 1, 2],
        "sampling": {"num_samples": 200, "batch_size": 100},
        "metrics": {"enabled": ["latent_stats"]},
        "claims": [
            {"claim": "sampling at the data temperature matches the marginals", "metric": "token_kl",
             "treatment": "independent [temperature=1.0]", "control": "independent [temperature=0.3]"},
            {"claim": "a sharpened sampler matches them as well (false)", "metric": "token_kl",
             "treatment": "independent [temperature=0.3]", "control": "independent [temperature=1.0]"},
        ],
        "out": str(tmp_path / "out"), "cache": str(tmp_path / "cache"), "device": "cpu", "precision": "fp32",
    }  # fmt: skip
    path = tmp_path / "bench.yaml"
    path.write_text(yaml.safe_dump(bench))
    assert main(["run", str(path)]) == 0
    table = pd.read_csv(Path(bench["out"]) / "claims.csv")
    assert table["verdict"].tolist() == ["holds", "does not hold"]
    numeric = ["seeds", "effect_mean", "effect_std", "effect_relative", "p_holds", "p_fails", "p_two_sided", "p_adjusted", "p_verdict"]
    assert all(pd.api.types.is_numeric_dtype(table[c]) for c in numeric)  # numbers in their own columns, not strings
    assert table["p_adjusted"].tolist() == pytest.approx(holm(table["p_two_sided"].tolist()))
    assert (table["p_verdict"] < 0.05).all()  # each verdict's own direction is the significant one
    assert "## Claims" in (Path(bench["out"]) / "report.md").read_text()
    bench["claims"][0]["treatment"] = "independent [temperature=2.0]"
    path.write_text(yaml.safe_dump(bench))
    assert main(["validate", str(path)]) == 2


def test_a_convergence_claim_needs_validation_curves(tmp_path, capsys):
    bench = {
        "name": "curves",
        "dataset": {"name": "synthetic_latents", "params": {"kind": "iid", "h": 2, "w": 2, "codebook_size": 4, "count": 40}},
        "priors": [{"name": "independent", "sweep": {"temperature": [0.5, 1.0]}}],
        "claims": [
            {"claim": "c", "metric": "val_nll_mean", "treatment": "independent [temperature=1.0]", "control": "independent [temperature=0.5]"}
        ],
    }
    path = tmp_path / "bench.yaml"
    path.write_text(yaml.safe_dump(bench))
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert "claims[0].metric" in err and "budget.eval_every" in err
    bench["budget"] = {"eval_every": 10}
    path.write_text(yaml.safe_dump(bench))
    assert main(["validate", str(path)]) == 0
