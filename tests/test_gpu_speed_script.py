"""benchmarks/gpu_speed.py: the GPU speed table's plan, its commands, its budget and its failure handling (run on
the CPU at toy sizes)."""

from __future__ import annotations

import importlib.util
import json
import shlex
import sys
from pathlib import Path

import pytest
import torch

from vqbench.cli import build_parser
from vqbench.config import parse_override, set_dotted

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_speed.py"


@pytest.fixture(scope="module")
def gpu_speed():
    spec = importlib.util.spec_from_file_location("gpu_speed", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_speed"] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("gpu_speed", None)


def test_plan_covers_every_prior_batch_precision_and_compile_choice(gpu_speed):
    rows = gpu_speed.plan()
    assert len({row.name for row in rows}) == len(rows)
    small = {(r.prior, r.batch, r.precision, r.compile) for r in rows if r.shape == (16, 16) and r.codebook == 1024}
    priors = ("sundae", "absorbing", "autoregressive", "imagebart", "independent")
    assert small == {(p, b, x, c) for p in priors for b in (8, 64) for x in ("fp32", "bf16") for c in (False, True)}
    paper = [r for r in rows if r.shape == (32, 32)]
    assert {(r.batch, r.precision, r.compile) for r in paper} == {(b, x, c) for b in (1, 16) for x in ("fp32", "bf16") for c in (False, True)}
    for row in paper:
        assert row.prior == "sundae" and row.codebook == 8192 and row.decode_preset == "megapixel-f32"
        assert row.params["backbone"]["dim"] == 2048 and row.params["backbone"]["depth"] == [2, 10, 2]
        assert row.options == {"steps": 100, "early_stop": False}
    goal = rows[0]
    assert (goal.shape, goal.batch, goal.precision, goal.compile) == ((32, 32), 16, "bf16", False)


@pytest.mark.parametrize("tiny", [False, True])
def test_each_rows_command_reproduces_the_row(gpu_speed, tiny):
    parser = build_parser()
    for row in gpu_speed.plan(tiny):
        args = parser.parse_args(shlex.split(row.command("cuda"))[1:])
        params: dict = {}
        for item in args.param or []:
            set_dotted(params, *parse_override(item))
        assert (args.prior, params, dict(parse_override(o) for o in args.option or [])) == (row.prior, row.params, row.options)
        assert (args.shape, args.codebook, args.batch, args.samples) == (f"{row.shape[0]}x{row.shape[1]}", row.codebook, row.batch, row.samples)
        assert (args.precision, args.compile == "on", args.decode_preset, args.device) == ([row.precision], row.compile, row.decode_preset, "cuda")


def test_rows_past_the_budget_are_listed_not_run(gpu_speed, tmp_path, monkeypatch):
    clock = iter(range(0, 10_000, 10))  # every clock read advances 10 s
    monkeypatch.setattr(gpu_speed.time, "perf_counter", lambda: next(clock))
    ran = []
    monkeypatch.setattr(gpu_speed, "run_row", lambda row, device, min_seconds: ran.append(row.name) or {"name": row.name, "sample_s_per_img": 1.0})
    assert gpu_speed.main(["--tiny", "--device", "cpu", "--out", str(tmp_path), "--budget-s", "45"]) == 0
    results = json.loads((tmp_path / "rows.json").read_text())
    planned = [row.name for row in gpu_speed.plan(tiny=True)]
    assert [r["name"] for r in results] == planned and 0 < len(ran) < len(planned)
    assert ran == planned[: len(ran)]
    assert all(r.get("skipped") == "budget" for r in results[len(ran) :])
    assert "Not measured (budget spent): " + ", ".join(planned[len(ran) :]) in (tmp_path / "speed.md").read_text()


def test_a_failing_row_is_recorded_and_the_others_still_run(gpu_speed, tmp_path, monkeypatch):
    real = gpu_speed.measure

    def measure(prior, *args, **kwargs):
        if prior == "absorbing":
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(prior, *args, **kwargs)

    monkeypatch.setattr(gpu_speed, "measure", measure)
    only = ["absorbing-16x16/fp32/b8", "independent-16x16/fp32/b8", "sundae-1024px/fp32/b1"]
    assert gpu_speed.main(["--tiny", "--device", "cpu", "--out", str(tmp_path), "--min-seconds", "0", "--only", *only]) == 0
    results = {r["name"]: r for r in json.loads((tmp_path / "rows.json").read_text())}
    assert list(results) == only
    assert results["absorbing-16x16/fp32/b8"]["error"] == "OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB"
    assert results["independent-16x16/fp32/b8"]["sample_s_per_img"] > 0
    paper = results["sundae-1024px/fp32/b1"]
    assert paper["nfe"] == 3.0 and paper["total_s_per_img"] == pytest.approx(paper["sample_s_per_img"] + paper["decode_s_per_img"])
    assert results["independent-16x16/fp32/b8"]["command"].startswith("vqbench speed independent --device cpu")
    env = json.loads((tmp_path / "environment.json").read_text())
    assert env["device"] == "cpu" and env["torch"] == torch.__version__


def test_unknown_rows_and_a_missing_gpu_are_refused(gpu_speed, tmp_path, capsys):
    assert gpu_speed.main(["--device", "cpu", "--out", str(tmp_path), "--only", "nothing*"]) == 2
    assert "--only nothing*: no row matches" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert gpu_speed.main(["--out", str(tmp_path)]) == 2
        assert "no CUDA device is visible" in capsys.readouterr().err
