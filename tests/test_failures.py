"""Failure isolation: a failing metric costs only its own columns; interrupts exit 130; logs stay per benchmark."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pandas as pd
import yaml

import vqbench
import vqbench.plugins as plugins
from vqbench.cli import main
from vqbench.interfaces import Column, Metric


class Boom(Metric):
    """Always fails."""

    def columns(self, config):
        return {"boom": Column("higher", "boom")}

    def compute(self, ctx, config):
        raise RuntimeError("no luck")


class BoomPlugin:
    @vqbench.hookimpl
    def vqbench_register_metrics(self, registry):
        registry.register("boom", Boom)


def write(tmp_path: Path, config: dict, name: str = "bench.yaml") -> str:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(config))
    return str(path)


def test_a_failing_metric_is_recorded_and_the_rest_of_the_cell_survives(smoke_config, tmp_path, capsys):
    plugins.register_plugin(BoomPlugin())
    smoke_config["metrics"]["enabled"] = ["boom", "nll"]
    assert main(["run", write(tmp_path, smoke_config)]) == 1
    out = Path(smoke_config["out"])
    record = json.loads((out / "runs" / "independent__seed0" / "metrics.json").read_text())
    assert record["info"]["failed_metrics"] == {"boom": "RuntimeError: no luck"}
    table = pd.read_csv(out / "report.csv", index_col="prior")
    assert pd.isna(table.loc["independent", "boom"]) and table.loc["independent", "nll_bpt"] > 0
    assert "metric `boom` failed in `independent__seed0` (its columns show n/a): RuntimeError: no luck" in (out / "report.md").read_text()
    assert "1 cell(s) with failures (independent__seed0)" in capsys.readouterr().err.strip().splitlines()[-1]
    # a rerun retries the cell whose metric failed
    assert main(["run", write(tmp_path, smoke_config)]) == 1
    assert "metrics boom failed last time: recomputing" in (out / "run.log").read_text()


def test_ctrl_c_exits_130(smoke_config, tmp_path, monkeypatch, capsys):
    import vqbench.runner.run as run

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(run, "run_benchmark", interrupted)
    assert main(["run", write(tmp_path, smoke_config)]) == 130
    assert "interrupted" in capsys.readouterr().err


def test_each_benchmark_of_a_multi_document_file_logs_only_to_its_own_folder(smoke_config, tmp_path):
    smoke_config["metrics"]["enabled"] = ["nll"]
    first, second = copy.deepcopy(smoke_config), copy.deepcopy(smoke_config)
    first["name"], second["name"] = "first", "second"
    for doc in (first, second):
        doc.pop("out")
    path = tmp_path / "two.yaml"
    path.write_text(yaml.safe_dump_all([first, second]))
    assert main(["run", str(path), "--out", str(tmp_path / "results")]) == 0
    logs = {name: (tmp_path / "results" / name / "run.log").read_text() for name in ("first", "second")}
    assert "results/first/" in logs["first"] and "results/second/" not in logs["first"]
    assert "results/second/" in logs["second"] and "results/first/" not in logs["second"]
