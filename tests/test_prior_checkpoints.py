"""``priors[].checkpoint``: a prior trained elsewhere (here: another results folder) is loaded instead of trained,
checked against the benchmark's latents before anything is written, and evaluated like any row."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from vqbench.cli import main

AR = {"name": "autoregressive", "params": {"backbone": {"name": "transformer", "dim": 16, "depth": 1, "heads": 2, "dim_head": 8}}}
BENCH = {
    "name": "ckpt",
    "dataset": {"name": "synthetic_latents", "params": {"kind": "markov", "h": 3, "w": 3, "codebook_size": 6, "count": 96}},
    "priors": [AR],
    "budget": {"steps": 30, "batch_size": 16, "lr": 3e-3},
    "sampling": {"num_samples": 8, "batch_size": 8, "grid_size": 2},
    "metrics": {"enabled": ["nll"]},
    "device": "cpu",
    "precision": "fp32",
}
CELL = "autoregressive__seed0"


def _write(tmp_path: Path, name: str, config: dict) -> Path:
    config = copy.deepcopy(config) | {"out": str(tmp_path / name / "out"), "cache": str(tmp_path / name / "cache")}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """The results folder of a benchmark that trained the prior."""
    root = tmp_path_factory.mktemp("trained")
    assert main(["run", str(_write(root, "a", BENCH))]) == 0
    return root / "a" / "out"


def _loaded(checkpoint: dict, **section) -> dict:
    """The benchmark with the prior loaded; its budget differs, so a row trained here by mistake would differ too."""
    prior = {"name": "autoregressive", "label": "loaded", "checkpoint": checkpoint, **section}
    return copy.deepcopy(BENCH) | {"priors": [prior], "budget": {"steps": 1, "batch_size": 16}}


def _values(out: Path, cell: str) -> dict:
    return json.loads((out / "runs" / cell / "metrics.json").read_text())["values"]


def test_a_loaded_prior_gives_the_numbers_and_samples_of_the_run_that_trained_it(trained, tmp_path):
    path = _write(tmp_path, "b", _loaded({"path": str(trained / "runs" / CELL / "prior.pt")}))
    assert main(["run", str(path)]) == 0
    out = tmp_path / "b" / "out"
    assert _values(out, "loaded__seed0")["nll_bpt"] == _values(trained, CELL)["nll_bpt"]
    assert np.array_equal(np.load(out / "runs" / "loaded__seed0" / "samples.npy"), np.load(trained / "runs" / CELL / "samples.npy"))
    assert not (out / "runs" / "loaded__seed0" / "train_curve.csv").exists()
    report = (out / "report.md").read_text()
    assert "`loaded`: loaded from prior.pt (vqbench, sha256 " in report and "the training budget does not apply" in report
    protocol = json.loads((out / "runs" / "loaded__seed0" / "metrics.json").read_text())["protocol"]
    assert (
        protocol["budget"] is None
        and protocol["loaded"]["sha256"] == __import__("hashlib").sha256((trained / "runs" / CELL / "prior.pt").read_bytes()).hexdigest()
    )


def test_sampler_settings_may_be_set_on_a_loaded_prior_and_change_its_samples(trained, tmp_path):
    path = _write(tmp_path, "c", _loaded({"path": str(trained / "runs" / CELL / "prior.pt")}, params={"temperature": 0.5}))
    assert main(["run", str(path)]) == 0
    samples = np.load(tmp_path / "c" / "out" / "runs" / "loaded__seed0" / "samples.npy")
    assert not np.array_equal(samples, np.load(trained / "runs" / CELL / "samples.npy"))


def test_a_file_of_an_older_cell_takes_its_geometry_from_the_config_beside_it(trained, tmp_path):
    old = tmp_path / "old"
    old.mkdir()
    state = torch.load(trained / "runs" / CELL / "prior.pt", weights_only=True)
    torch.save({"config": state["config"], "state_dict": state["state_dict"]}, old / "prior.pt")
    (old / "config.json").write_text((trained / "runs" / CELL / "config.json").read_text())
    assert main(["run", str(_write(tmp_path, "d", _loaded({"path": str(old / "prior.pt")})))]) == 0
    assert _values(tmp_path / "d" / "out", "loaded__seed0")["nll_bpt"] == _values(trained, CELL)["nll_bpt"]


def _refused(tmp_path: Path, config: dict, capsys) -> str:
    path = _write(tmp_path, "bad", config)
    assert main(["run", str(path)]) == 2
    assert not (tmp_path / "bad").exists(), "bad input must leave nothing behind"
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("vqbench: error: "), err
    return err


def test_a_checkpoint_of_other_latents_is_refused_naming_both_sizes(trained, tmp_path, capsys):
    config = _loaded({"path": str(trained / "runs" / CELL / "prior.pt")})
    config["dataset"]["params"] |= {"h": 4, "w": 4, "codebook_size": 8}
    err = _refused(tmp_path, config, capsys)
    assert "priors[0].checkpoint.path" in err and "3×3 latents with 6 codes" in err and "4×4 with 8 codes" in err


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"name": "absorbing"}, "holds a 'autoregressive' prior, but this row is 'absorbing'"),
        ({"params": {"backbone": {"dim": 64}}}, "priors[0].params.backbone: fixed by the checkpoint"),
        ({"lr": 1e-3}, "priors[0].lr: a prior loaded from a checkpoint is not trained"),
        ({"checkpoint": {"path": "nowhere.pt"}}, "priors[0].checkpoint.path: checkpoint"),
        ({"checkpoint": {"path": "PRIOR", "format": "unleashed"}}, "priors[0].checkpoint.format: unknown checkpoint format 'unleashed'"),
    ],
)
def test_bad_checkpoint_rows_are_refused_before_anything_is_written(trained, tmp_path, capsys, change, named):
    prior = {"name": "autoregressive", "checkpoint": {"path": str(trained / "runs" / CELL / "prior.pt")}} | change
    if prior["checkpoint"]["path"] == "PRIOR":
        prior["checkpoint"]["path"] = str(trained / "runs" / CELL / "prior.pt")
    assert named in _refused(tmp_path, copy.deepcopy(BENCH) | {"priors": [prior]}, capsys)


def test_weights_that_do_not_fit_the_prior_they_describe_are_refused(trained, tmp_path, capsys):
    state = torch.load(trained / "runs" / CELL / "prior.pt", weights_only=True)
    state["state_dict"] = {k: v for k, v in state["state_dict"].items() if "to_logits" not in k}  # a damaged file
    torch.save(state, tmp_path / "damaged.pt")
    err = _refused(tmp_path, _loaded({"path": str(tmp_path / "damaged.pt")}), capsys)
    assert "damaged.pt does not fit the prior it describes" in err and "to_logits" in err
