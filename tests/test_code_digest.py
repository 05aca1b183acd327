"""Caches follow what code does, not its bytes: comments, docstrings and formatting keep a finished cell; a changed
constant recomputes it; `--reuse-stale` keeps it on purpose and the report says so."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import yaml

import vqbench.plugins as plugins
from vqbench import provenance
from vqbench.cli import main

from . import example_plugin

SOURCE = Path(example_plugin.__file__).read_text()


def _digest(tmp_path: Path, text: str) -> str:
    path = tmp_path / "module_under_digest.py"
    path.write_text(text)
    provenance._file_digest.cache_clear()
    return provenance._file_digest(str(path))


def test_comments_docstrings_and_formatting_keep_the_digest(tmp_path):
    base = _digest(tmp_path, SOURCE)
    commented = SOURCE.replace("class TablePrior(Prior):", "# a comment\nclass TablePrior(Prior):  # and another")
    redocumented = SOURCE.replace('"""Per-position logits trained by gradient descent', '"""Rewritten documentation of')
    reformatted = SOURCE.replace("torch.randn(n, codebook_size) * config.init_scale", "torch.randn( n,\n  codebook_size ) * config.init_scale")
    assert commented != SOURCE and redocumented != SOURCE and reformatted != SOURCE
    assert _digest(tmp_path, commented) == base
    assert _digest(tmp_path, redocumented) == base
    assert _digest(tmp_path, reformatted) == base


def test_a_changed_constant_or_string_literal_changes_the_digest(tmp_path):
    base = _digest(tmp_path, SOURCE)
    assert _digest(tmp_path, SOURCE.replace("init_scale: float = 0.0", "init_scale: float = 0.5")) != base
    assert _digest(tmp_path, SOURCE.replace("/ math.log(2)", "/ math.log(10)")) != base
    assert _digest(tmp_path, SOURCE.replace('"The table prior', '"The tablet prior')) == base  # module docstring only


def _load_plugin(path: Path):
    spec = importlib.util.spec_from_file_location("edited_plugin", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["edited_plugin"] = module
    spec.loader.exec_module(module)
    provenance._file_digest.cache_clear()
    plugins.reset()
    plugins.register_plugin(module)
    return module


def _bench(tmp_path: Path) -> Path:
    config = {
        "name": "digest",
        "dataset": {"name": "synthetic_latents", "params": {"kind": "iid", "h": 2, "w": 2, "codebook_size": 4, "count": 96}},
        "priors": [{"name": "table"}],
        "budget": {"steps": 4, "batch_size": 8, "checkpoint_every": 2},
        "sampling": {"num_samples": 8, "batch_size": 8, "grid_size": 2},
        "metrics": {"enabled": ["nll", "latent_stats"]},
        "device": "cpu", "precision": "fp32", "out": str(tmp_path / "out"), "cache": str(tmp_path / "cache"),
    }  # fmt: skip
    (tmp_path / "bench.yaml").write_text(yaml.safe_dump(config))
    return tmp_path / "bench.yaml"


def _computed(tmp_path: Path) -> str:
    return (tmp_path / "out" / "runs" / "table__seed0" / "metrics.json").read_text()


@pytest.fixture
def edited(tmp_path):
    path = tmp_path / "edited_plugin.py"

    def write(text: str):
        path.write_text(text)
        return _load_plugin(path)

    yield write
    sys.modules.pop("edited_plugin", None)


def test_a_comment_edit_keeps_the_cell_and_a_behaviour_change_recomputes_it(tmp_path, edited, caplog):
    bench = str(_bench(tmp_path))
    edited(SOURCE)
    assert main(["run", bench]) == 0
    first = _computed(tmp_path)
    edited(SOURCE.replace("class TablePrior(Prior):", "# reworded\nclass TablePrior(Prior):").replace('"""Per-position logits', '"""Logits'))
    assert main(["run", bench]) == 0
    assert _computed(tmp_path) == first and "already finished: skipped" in caplog.text
    caplog.clear()
    edited(SOURCE.replace("/ math.log(2)", "/ math.log(2.0) * 1.0"))
    assert main(["run", bench]) == 0
    assert "computed under other settings (code)" in caplog.text and _computed(tmp_path) != first


def test_reuse_stale_keeps_cells_across_a_code_change_and_the_report_says_so(tmp_path, edited, caplog):
    bench = str(_bench(tmp_path))
    edited(SOURCE)
    assert main(["run", bench]) == 0
    first = _computed(tmp_path)
    edited(SOURCE.replace("/ math.log(2)", "/ math.log(2.0) * 1.0"))
    assert main(["run", bench, "--reuse-stale"]) == 0
    assert "kept (--reuse-stale)" in caplog.text
    report = (tmp_path / "out" / "report.md").read_text()
    assert "Reused across a code change" in report and "table__seed0" in report
    assert yaml.safe_load(first)["values"] == yaml.safe_load(_computed(tmp_path))["values"]
    assert main(["run", bench]) == 0  # without the flag the stale cell is recomputed
    assert "Reused across a code change" not in (tmp_path / "out" / "report.md").read_text()


def test_reuse_stale_reuses_trained_weights_of_other_code_and_reports_the_cell(tmp_path, edited, caplog):
    bench = str(_bench(tmp_path))
    edited(SOURCE)
    assert main(["run", bench]) == 0
    (tmp_path / "out" / "runs" / "table__seed0" / "metrics.json").unlink()  # the cell itself must be evaluated again
    edited(SOURCE.replace("/ math.log(2)", "/ math.log(2.0) * 1.0"))
    assert main(["run", bench, "--reuse-stale"]) == 0
    assert "reused (--reuse-stale)" in caplog.text and "trained weights reused" in caplog.text
    assert "cells from other code: table__seed0" in (tmp_path / "out" / "report.md").read_text()
    assert main(["run", bench]) == 0  # a later run without the flag keeps the finished cell and still says so
    assert "cells from other code: table__seed0" in (tmp_path / "out" / "report.md").read_text()
    caplog.clear()
    (tmp_path / "out" / "runs" / "table__seed0" / "metrics.json").unlink()
    assert main(["run", bench]) == 0  # without the flag the other code's weights are not used
    assert "reused (--reuse-stale)" not in caplog.text and "trained weights reused" not in caplog.text
