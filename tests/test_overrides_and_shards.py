"""Overrides stay where they are put (YAML anchors, `vqbench speed --param`), dry runs plan exactly this job's cells
after every check `validate` runs, `--shard auto` reads a job array's environment, and names stay inside results/."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

import vqbench
from vqbench.cli import main
from vqbench.config import merged, to_dict
from vqbench.errors import ConfigError
from vqbench.runner.run import plan_cells
from vqbench.runner.schema import load_yaml, parse_benchmark
from vqbench.runner.shards import parse_shard
from vqbench.speed import measure

ANCHORED = """
name: anchors
dataset: {name: synthetic_latents, params: {kind: iid, h: 4, w: 4, codebook_size: 8, count: 64}}
priors:
  - name: absorbing
    params: &net
      backbone: {name: transformer, dim: 32, depth: 1, heads: 2, dim_head: 16}
  - name: absorbing
    label: merged
    params: {<<: *net, sampler: maskgit}
  - name: autoregressive
    params: *net
"""


def _cells(tmp_path: Path, text: str, overrides: list[tuple[str, object]]) -> dict[str, dict]:
    path = tmp_path / "bench.yaml"
    path.write_text(text)
    regs = vqbench.registries()
    bench = parse_benchmark(load_yaml(path)[0], regs.metrics.names(), overrides)
    return {cell.variant.label: cell.variant.params for cell in plan_cells(bench, regs)}


def test_an_override_of_one_anchored_prior_leaves_the_others_alone(tmp_path):
    params = _cells(tmp_path, ANCHORED, [("priors.2.params.backbone.dim", 64)])
    assert params["autoregressive"]["backbone"]["dim"] == 64
    assert params["absorbing"]["backbone"]["dim"] == 32 and params["merged"]["backbone"]["dim"] == 32
    params = _cells(tmp_path, ANCHORED, [("priors.1.params.backbone.depth", 3)])  # through the merge key `<<:`
    assert params["merged"]["backbone"]["depth"] == 3
    assert params["absorbing"]["backbone"]["depth"] == 1 and params["autoregressive"]["backbone"]["depth"] == 1


def test_the_dry_run_shows_an_anchored_override_on_its_own_row_only(tmp_path, capsys):
    path = tmp_path / "bench.yaml"
    path.write_text(ANCHORED)
    assert main(["run", str(path), "--dry-run"]) == 0
    before = capsys.readouterr().out
    assert main(["run", str(path), "--dry-run", "--set", "priors.2.params.backbone.dim=64"]) == 0
    after = capsys.readouterr().out
    rows = lambda text: {line.split()[0]: line.split()[-3] for line in text.splitlines() if "__seed" in line}  # noqa: E731
    assert rows(after)["absorbing__seed0"] == rows(before)["absorbing__seed0"]
    assert rows(after)["merged__seed0"] == rows(before)["merged__seed0"]
    assert rows(after)["autoregressive__seed0"] != rows(before)["autoregressive__seed0"]


def test_each_swept_variant_gets_its_own_copy_of_a_swept_mapping(tmp_path):
    text = ANCHORED.replace(
        "  - name: autoregressive\n    params: *net\n",
        "  - name: autoregressive\n    params: *net\n    sweep:\n"
        "      backbone: [{name: transformer, dim: 32, depth: 1, heads: 2, dim_head: 16}]\n      backbone.depth: [1, 2]\n",
    )
    path = tmp_path / "bench.yaml"
    path.write_text(text)
    regs = vqbench.registries()
    bench = parse_benchmark(load_yaml(path)[0], regs.metrics.names())
    depths = {cell.variant.name.rsplit(",", 1)[-1]: cell.variant.params["backbone"]["depth"] for cell in plan_cells(bench, regs) if cell.variant.name}
    assert depths == {"depth=1": 1, "depth=2": 2}


def test_a_dry_run_lists_missing_latents_and_checkpoints_instead_of_stopping(tmp_path, capsys):
    data = yaml.safe_load(ANCHORED)
    data.pop("dataset")
    data["latents"] = {"train": str(tmp_path / "nowhere" / "train"), "test": str(tmp_path / "nowhere" / "test")}
    (tmp_path / "bench.yaml").write_text(yaml.safe_dump(data))
    assert main(["run", str(tmp_path / "bench.yaml"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "not on disk (a real run stops here): latents.train" in out and "latents: unknown" in out
    assert "autoregressive__seed0" in out
    assert main(["validate", str(tmp_path / "bench.yaml")]) == 2


def test_merged_keeps_default_keys_and_replaces_a_mapping_that_names_another_plugin():
    base = {"backbone": {"name": "transformer", "dim": 256, "depth": 8}, "steps": 10}
    assert merged(base, {"backbone": {"dim": 64}}) == {"backbone": {"name": "transformer", "dim": 64, "depth": 8}, "steps": 10}
    assert merged(base, {"backbone": {"name": "hourglass"}}) == {"backbone": {"name": "hourglass"}, "steps": 10}
    assert base["backbone"]["dim"] == 256


def test_speed_params_merge_into_the_priors_default_backbone():
    """`vqbench speed autoregressive --param backbone.dim=32`: the default backbone with dim 32 (depth, heads kept)."""
    cls = vqbench.registries().priors.get("autoregressive")
    default = to_dict(cls.Config())["backbone"]
    expected = cls(cls.Config(backbone={**default, "dim": 32}), 16, (2, 2))
    alone = cls(cls.Config(backbone={"name": default["name"], "dim": 32}), 16, (2, 2))
    want = sum(p.numel() for p in expected.parameters()) / 1e6
    assert want != sum(p.numel() for p in alone.parameters()) / 1e6
    row = measure("autoregressive", {"backbone": {"dim": 32}}, (2, 2), 16, 2, 2, {}, "fp32", vqbench_cpu(), min_seconds=0.0)
    assert row["params_m"] == pytest.approx(want)


def vqbench_cpu():
    import torch

    return torch.device("cpu")


CLAIMED = (
    ANCHORED
    + """
seeds: [0, 1]
claims:
  - {claim: "merged beats absorbing", metric: fid, treatment: merged, control: absorbign}
"""
)


def test_the_dry_run_plans_exactly_this_shards_cells(tmp_path, capsys):
    path = tmp_path / "bench.yaml"
    path.write_text(ANCHORED + "seeds: [0, 1]\n")
    assert main(["run", str(path), "--dry-run", "--shard", "1/4"]) == 0
    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines() if "__seed" in line]
    assert listed == ["absorbing__seed1", "autoregressive__seed1"]  # plan positions 1 and 5 of 6


def test_the_dry_run_runs_the_claim_checks_that_validate_runs(tmp_path, capsys):
    path = tmp_path / "bench.yaml"
    path.write_text(CLAIMED)
    assert main(["validate", str(path)]) == 2
    assert main(["run", str(path), "--dry-run"]) == 2
    assert "claims[0].control" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_COUNT": "3"}, (0, 3)),
        ({"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_COUNT": "3"}, (2, 3)),
        ({"SLURM_ARRAY_TASK_ID": "4", "SLURM_ARRAY_TASK_MIN": "0", "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_STEP": "2"}, (2, 4)),
        ({"VQBENCH_SHARD_INDEX": "2", "VQBENCH_SHARD_COUNT": "5"}, (2, 5)),
    ],
)
def test_shard_auto_reads_the_job_arrays_environment(env, expected):
    assert parse_shard("auto", env) == expected


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({}, "SLURM_ARRAY_TASK_ID"),
        ({"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_MIN": "1"}, "SLURM_ARRAY_TASK_COUNT"),
        ({"SLURM_ARRAY_TASK_ID": "x", "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_COUNT": "2"}, "'x'"),
        ({"VQBENCH_SHARD_INDEX": "5", "VQBENCH_SHARD_COUNT": "5"}, "out of range"),
    ],
)
def test_shard_auto_without_a_usable_environment_says_what_to_set(env, named):
    with pytest.raises(ConfigError, match="--shard") as err:
        parse_shard("auto", env)
    assert named in str(err.value)


def test_a_one_based_shard_is_refused_with_a_hint(capsys, tmp_path):
    with pytest.raises(ConfigError, match="2/3, or --shard auto"):
        parse_shard("3/3")
    path = tmp_path / "bench.yaml"
    path.write_text(ANCHORED)
    assert main(["run", str(path), "--dry-run", "--shard", "3/3"]) == 2


def test_shard_auto_reaches_the_dry_run(tmp_path, capsys, monkeypatch):
    for name, value in {"SLURM_ARRAY_TASK_ID": "2", "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_COUNT": "2"}.items():
        monkeypatch.setenv(name, value)
    path = tmp_path / "bench.yaml"
    path.write_text(ANCHORED)
    assert main(["run", str(path), "--dry-run", "--shard", "auto"]) == 0
    out = capsys.readouterr().out
    assert "shard 1/2 of 3 cells" in out
    assert [line.split()[0] for line in out.splitlines() if "__seed" in line] == ["merged__seed0"]


@pytest.mark.parametrize("name", ["..", ".", ".hidden", "a/b", "../x", ""])
def test_a_benchmark_name_is_one_safe_folder_name(tmp_path, monkeypatch, capsys, name):
    monkeypatch.chdir(tmp_path)
    data = yaml.safe_load(ANCHORED) | {"name": name}
    (tmp_path / "bench.yaml").write_text(yaml.safe_dump(data))
    assert main(["run", "bench.yaml"]) == 2
    err = capsys.readouterr().err
    assert "name" in err and "--out" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bench.yaml"]
