"""results.json's ``metrics`` section: every report row's per-seed values (as in runs/*/metrics.json), mean, std over
seeds, n and a 95 % t-interval, the bootstrap intervals of FID/KID/PRDC, rewritten whenever the report is rebuilt."""

from __future__ import annotations

import copy
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy import stats

from vqbench.cli import main
from vqbench.io import read_json, write_json
from vqbench.results_file import seed_summary

from .conftest import SMOKE

T_975_2 = 4.302652729911275  # t(0.975) with 2 degrees of freedom, from a table


def strict_json(path: Path) -> dict:
    """The file as JSON, refusing NaN and ±Infinity (not JSON)."""
    return json.loads(path.read_text(), parse_constant=lambda name: pytest.fail(f"{path.name} holds {name}"))


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A tiny image benchmark, three seeds, FID/KID/PRDC with 4 bootstrap resamples (about 30 s on 2 cores)."""
    root = tmp_path_factory.mktemp("results_file")
    config = copy.deepcopy(SMOKE) | {"out": str(root / "out"), "cache": str(root / "cache"), "seeds": [0, 1, 2]}
    config["metrics"] = {**config["metrics"], "enabled": ["fid", "kid", "prdc", "latent_stats"], "bootstrap": 4}
    config["metrics"].pop("inpainting")
    (root / "bench.yaml").write_text(yaml.safe_dump(config))
    assert main(["run", str(root / "bench.yaml")]) == 0
    return root / "out"


def cells(out: Path) -> dict[int, dict]:
    return {record["seed"]: record for record in map(read_json, sorted((out / "runs").glob("*/metrics.json")))}


def test_seed_summary_is_the_hand_calculation():
    got = seed_summary([1.0, 2.0, 3.0])
    half = T_975_2 * 1.0 / math.sqrt(3)
    assert got == pytest.approx({"mean": 2.0, "std": 1.0, "n": 3, "ci95_low": 2.0 - half, "ci95_high": 2.0 + half})
    assert seed_summary([4.0, None, math.nan]) == {"mean": 4.0, "std": None, "n": 1, "ci95_low": None, "ci95_high": None}
    assert seed_summary([]) == {"mean": None, "std": None, "n": 0, "ci95_low": None, "ci95_high": None}


def test_results_json_holds_every_seed_of_every_row_as_the_runs_do(finished):
    record = strict_json(finished / "results.json")
    assert {"benchmark", "versions", "started", "finished", "failures"} <= set(record)  # the run's keys stay
    section = record["metrics"]
    (row,) = section["rows"]
    per_seed = cells(finished)
    assert row["row"] == "independent" and row["seeds"] == [0, 1, 2] and row["cells"] == [per_seed[s]["cell"] for s in (0, 1, 2)]
    assert {"fid", "kid", "precision", "coverage", "token_kl"} <= set(row["metrics"])
    for name, entry in row["metrics"].items():
        if name in ("parameters_m", "train_gflops", "sample_gflops"):
            continue
        values = [per_seed[s]["values"][name] for s in (0, 1, 2)]
        assert entry["seeds"] == [0, 1, 2] and entry["values"] == pytest.approx(values), name
        assert {k: entry[k] for k in ("direction", "label", "digits")} == {
            k: per_seed[0]["columns"][name][k] for k in ("direction", "label", "digits")
        }
        assert entry["n"] == 3 and entry["mean"] == pytest.approx(np.mean(values)) and entry["std"] == pytest.approx(np.std(values, ddof=1))
        half = stats.t.ppf(0.975, 2) * np.std(values, ddof=1) / math.sqrt(3)
        assert [entry["ci95_low"], entry["ci95_high"]] == pytest.approx([np.mean(values) - half, np.mean(values) + half]), name
    assert row["metrics"]["fid"]["label"] == "FID" and row["metrics"]["fid"]["direction"] == "lower"
    assert row["metrics"]["kid"]["label"] == "KID (raw)"
    assert section["bootstrap"]["resamples"] == 4


def test_bootstrap_intervals_are_carried_into_results_json_and_stay_out_of_the_tables(finished):
    per_seed = cells(finished)
    metrics = strict_json(finished / "results.json")["metrics"]["rows"][0]["metrics"]
    for name in ("fid", "kid", "precision", "recall", "density", "coverage"):
        carried = metrics[name]["bootstrap"]
        for part, key in (("low", "ci_low"), ("high", "ci_high"), ("bias", "boot_bias")):
            assert carried[part] == pytest.approx([per_seed[s]["values"][f"{name}_{key}"] for s in (0, 1, 2)]), (name, part)
        assert all(low <= value <= high for low, value, high in zip(carried["low"], metrics[name]["values"], carried["high"]))
    assert "bootstrap" not in metrics["token_kl"]
    for kind in ("csv", "md", "tex"):
        text = (finished / f"report.{kind}").read_text()
        assert "ci_low" not in text and "ci_high" not in text and "boot_bias" not in text, kind
    assert "KID (raw)" in (finished / "report.md").read_text() and "KID (raw)" in (finished / "report.tex").read_text()
    header = (finished / "report.md").read_text().split("\n## ")[0]
    assert "95 % t-interval over seeds" in header and "bootstrap interval of FID, KID and PRDC over 4 resamples" in header


def test_a_rebuilt_report_rewrites_the_section_from_the_runs(finished, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(finished, out)
    for seed, record in cells(out).items():
        record["values"]["fid"] = [1.0, 2.0, 3.0][seed]
        record["values"]["kid"] = math.nan if seed == 2 else record["values"]["kid"]  # a failed metric: n/a in one seed
        write_json(out / "runs" / record["cell"] / "metrics.json", record)
    assert main(["report", str(out)]) == 0
    record = strict_json(out / "results.json")
    assert record["benchmark"]["name"] == "smoke" and "finished" in record  # read-modify-write: the run's keys stay
    fid = record["metrics"]["rows"][0]["metrics"]["fid"]
    half = T_975_2 / math.sqrt(3)
    assert fid["values"] == [1.0, 2.0, 3.0] and fid["n"] == 3
    assert fid["mean"] == pytest.approx(2.0) and fid["std"] == pytest.approx(1.0)
    assert [fid["ci95_low"], fid["ci95_high"]] == pytest.approx([2.0 - half, 2.0 + half])
    kid = record["metrics"]["rows"][0]["metrics"]["kid"]
    assert kid["values"][2] is None and kid["n"] == 2  # NaN is null in the file and left out of the summary
