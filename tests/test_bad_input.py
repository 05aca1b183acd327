"""Bad input stops `vqbench run` with one line naming the key or path, exit code 2, and nothing written: neither the
results folder nor the cache is created."""

from __future__ import annotations

import copy
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from vqbench.cli import main

from .conftest import SMOKE

LATENT = {
    "name": "bad",
    "dataset": {"name": "synthetic_latents", "params": {"kind": "iid", "h": 2, "w": 2, "codebook_size": 4, "count": 64}},
    "priors": [{"name": "autoregressive", "params": {"backbone": {"name": "transformer", "dim": 16, "depth": 1, "heads": 2, "dim_head": 8}}}],
    "budget": {"steps": 2, "batch_size": 4},
    "sampling": {"num_samples": 4, "batch_size": 4, "grid_size": 2},
    "metrics": {"enabled": ["nll"]},
    "device": "cpu",
    "precision": "fp32",
}


def _run(tmp_path: Path, config: dict, capsys, *extra: str, raw: bytes | None = None) -> str:
    """Run ``config`` (or the bytes ``raw``) with out/cache in tmp_path; assert exit 2 and nothing written."""
    config = copy.deepcopy(config)
    config.setdefault("out", str(tmp_path / "out"))
    config.setdefault("cache", str(tmp_path / "cache"))
    path = tmp_path / "bench.yaml"
    path.write_bytes(raw if raw is not None else yaml.safe_dump(config, allow_unicode=True).encode())
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main(["run", str(path), *extra]) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == before, "bad input must leave nothing behind"
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("vqbench: error: "), err
    return err


def _with(config: dict, dotted: str, value) -> dict:
    config = copy.deepcopy(config)
    node = config
    *parents, last = dotted.split(".")
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
    node[last] = value
    return config


def test_a_benchmark_file_that_is_not_utf8(tmp_path, capsys):
    err = _run(tmp_path, LATENT, capsys, raw=yaml.safe_dump(LATENT).replace("bad", "b\u00e9d").encode("latin-1"))
    assert "not UTF-8" in err and "bench.yaml" in err


@pytest.mark.parametrize(
    ("dotted", "value", "named"),
    [
        ("sampling.grid_size", 0, "sampling.grid_size"),
        ("budget.lr", float("nan"), "budget.lr"),
        ("budget.lr", float("inf"), "budget.lr"),
        ("budget.lr", 10**400, "budget.lr"),
        ("priors.0.lr", float("-inf"), "priors[0].lr"),
        ("dataset.split_seed", -1, "dataset.split_seed"),
        ("seeds", [0, -2], "seeds[1]"),
        ("metrics.feature_seed", -1, "metrics.feature_seed"),
    ],
)
def test_bad_values_are_refused_by_key(tmp_path, capsys, dotted, value, named):
    err = _run(tmp_path, _with(LATENT, dotted, value), capsys)
    assert (named or dotted.split(".")[0]) in err


def test_a_batch_too_large_to_allocate_names_the_setting_and_the_memory(tmp_path, capsys):
    err = _run(tmp_path, _with(LATENT, "budget.batch_size", 10**11), capsys)
    assert "budget.batch_size" in err and "autoregressive" in err and "bytes" in err


def test_out_pointing_at_a_file(tmp_path, capsys):
    (tmp_path / "taken").write_text("")
    err = _run(tmp_path, LATENT, capsys, "--out", str(tmp_path / "taken"))
    assert "--out" in err and "is a file" in err
    err = _run(tmp_path, LATENT, capsys, "--out", str(tmp_path / "taken" / "below"))
    assert "lies under the file" in err


@pytest.mark.parametrize("key", ["out", "cache"])
def test_an_unwritable_results_or_cache_folder(tmp_path, capsys, key):
    if not Path("/sys").is_dir():
        pytest.skip("needs /sys, which no process may create files in")
    err = _run(tmp_path, LATENT | {key: "/sys/vqbench-unwritable"}, capsys)
    assert key in err and "cannot write" in err


def _tokenizer_config(tmp_path: Path, **tokenizer) -> dict:
    config = copy.deepcopy(SMOKE)
    config["tokenizer"] = tokenizer
    return config


def test_an_empty_tokenizer_checkpoint(tmp_path, capsys):
    (tmp_path / "tok.ckpt").write_bytes(b"")  # the message, not the file name, must say it is empty
    err = _run(tmp_path, _tokenizer_config(tmp_path, checkpoint=str(tmp_path / "tok.ckpt")), capsys)
    assert "tok.ckpt" in err and "is empty" in err and "weights_only" not in err


def test_a_broken_taming_yaml(tmp_path, capsys):
    torch.save({"state_dict": {}}, tmp_path / "last.ckpt")
    (tmp_path / "model.yaml").write_text("model:\n  params: {ddconfig: [unclosed\n")
    err = _run(tmp_path, _tokenizer_config(tmp_path, checkpoint=str(tmp_path / "last.ckpt"), config=str(tmp_path / "model.yaml")), capsys)
    assert "model.yaml" in err and "YAML" in err


@pytest.mark.parametrize(
    ("section", "named"),
    [
        ({"train": {"stpes": 10}}, "tokenizer.train.stpes"),
        ({"train": {"lr": -1.0}}, "tokenizer.train.lr"),
        ({"params": {"n_embd": 8}}, "tokenizer.params.n_embd"),
        ({"seed": -3}, "tokenizer.seed"),
    ],
)
def test_tokenizer_settings_are_checked_before_anything_is_written(tmp_path, capsys, section, named):
    config = copy.deepcopy(SMOKE)
    config["tokenizer"] = {**config["tokenizer"], **section}
    assert named in _run(tmp_path, config, capsys)


class _Payload:
    """Unpickling this runs a command: a checkpoint must never be loaded with code execution."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_damaged_or_malicious_tokenizer_checkpoint(tmp_path, capsys):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    (inputs / "random.ckpt").write_bytes(bytes(range(256)) * 8)
    (inputs / "evil.ckpt").write_bytes(pickle.dumps({"state_dict": _Payload(inputs / "PWNED")}))
    for name in ("random.ckpt", "evil.ckpt"):
        err = _run(tmp_path, _tokenizer_config(tmp_path, checkpoint=str(inputs / name)), capsys)
        assert name in err and "cannot be loaded safely" in err and "Re-running" not in err, err
    assert not (inputs / "PWNED").exists()


def test_an_unknown_tokenizer_preset(tmp_path, capsys):
    config = copy.deepcopy(SMOKE)
    config["tokenizer"]["preset"] = "tinyy"
    assert "tokenizer.preset: unknown vqgan preset 'tinyy' — did you mean 'tiny'?" in _run(tmp_path, config, capsys)


@pytest.mark.parametrize(("extractor", "named"), [("inception-v3-compat", "cannot be loaded safely"), ("random-cnn", "has no weights to load")])
def test_feature_weights_that_cannot_be_used(tmp_path, capsys, extractor, named):
    weights = tmp_path / "weights" / "inception.pth"
    weights.parent.mkdir()
    weights.write_bytes(b"\x80\x02garbage" * 40)
    config = copy.deepcopy(SMOKE)
    config["metrics"] |= {"feature_extractor": extractor, "feature_weights": str(weights)}
    err = _run(tmp_path, config, capsys)
    assert named in err and ("inception.pth" in err or "metrics.feature_weights" in err)


def test_latents_with_codes_outside_the_codebook(tmp_path, capsys):
    from vqbench import latents

    folder = tmp_path / "latents"
    latents.write(folder / "train", np.zeros((16, 2, 2), dtype=np.int64), 4)
    latents.write(folder / "test", np.zeros((4, 2, 2), dtype=np.int64), 4)
    codes = np.load(folder / "train" / "codes.npy")
    codes[3, 1, 0] = 9  # a damaged file: its meta.json still says codebook size 4
    np.save(folder / "train" / "codes.npy", codes)
    config = {k: v for k, v in LATENT.items() if k != "dataset"} | {"latents": {"train": str(folder / "train"), "test": str(folder / "test")}}
    assert "code 9 is out of range for codebook size 4" in _run(tmp_path, config, capsys)
