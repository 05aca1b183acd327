"""Known-truth sources and metrics, and a known-truth benchmark through the CLI (with shared training)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from vqbench_plugins.synthetic_latents import SyntheticLatents, SyntheticLatentsConfig, entropy_bits, hamming_radius

from vqbench.cli import main
from vqbench.metrics.known_truth import template_precision_recall


def source(**params):
    return SyntheticLatents(SyntheticLatentsConfig(**{"h": 4, "w": 4, "codebook_size": 8, **params}))


def test_sources_are_deterministic_and_valid():
    for kind in ("iid", "markov", "templates"):
        s = source(kind=kind)
        a, b = s.generate(100, 3), s.generate(100, 3)
        assert a.shape == (100, 4, 4) and np.array_equal(a, b) and a.max() < 8 and a.min() >= 0
        assert not np.array_equal(a, s.generate(100, 4))


@pytest.mark.parametrize("kind", ["iid", "markov"])
def test_exact_entropy_matches_the_empirical_one(kind):
    s = source(kind=kind)
    x = s.generate(40000, 0).reshape(40000, -1)
    entropy = s.truth()["entropy_bits_per_token"]
    if kind == "iid":
        empirical = entropy_bits(np.bincount(x.ravel(), minlength=8) / x.size)
    else:
        pairs = np.zeros((8, 8))
        np.add.at(pairs, (x[:, :-1].ravel(), x[:, 1:].ravel()), 1)
        rows = pairs / pairs.sum(1, keepdims=True)
        first = entropy_bits(np.bincount(x[:, 0], minlength=8) / len(x))
        empirical = (first + 15 * sum(pairs[i].sum() / pairs.sum() * entropy_bits(rows[i]) for i in range(8))) / 16
    assert empirical == pytest.approx(entropy, abs=0.01)


def test_template_precision_and_recall_are_exact():
    s = source(kind="templates", num_templates=4, noise=0.1)
    truth = s.truth()
    templates = torch.tensor(truth["templates"])
    assert truth["exact"] and truth["template_radius"] == hamming_radius(16, 0.1 * (1 - 1 / 8))
    p, r = template_precision_recall(torch.from_numpy(s.generate(2000, 0)), templates, truth["template_radius"])
    assert p >= 0.98 and r == 1.0
    only_first = templates[:1].expand(10, -1, -1)
    assert template_precision_recall(only_first, templates, 0) == (1.0, 0.25)
    uniform = torch.randint(8, (500, 4, 4), generator=torch.Generator().manual_seed(0))
    assert template_precision_recall(uniform, templates, truth["template_radius"])[0] < 0.05


def test_known_truth_benchmark_end_to_end_with_shared_training(tmp_path):
    backbone = {"name": "transformer", "dim": 32, "depth": 1, "heads": 2, "dim_head": 16}
    bench = {
        "name": "kt", "dataset": {"name": "synthetic_latents", "params": {"kind": "templates", "h": 4, "w": 4, "codebook_size": 8, "count": 600, "num_templates": 4}},
        "priors": [
            {"name": "independent"},
            {"name": "absorbing", "params": {"backbone": backbone, "total_steps": 8}},
            {"name": "absorbing", "label": "absorbing + maskgit sampler", "params": {"backbone": backbone, "total_steps": 8, "sampler": "maskgit", "maskgit_steps": 4}},
        ],
        "budget": {"steps": 6, "batch_size": 16}, "sampling": {"num_samples": 32, "batch_size": 16},
        "metrics": {"enabled": ["known_truth", "nll", "sample_time"]},
        "out": str(tmp_path / "out"), "cache": str(tmp_path / "cache"), "device": "cpu",
    }  # fmt: skip
    path = tmp_path / "kt.yaml"
    path.write_text(yaml.safe_dump(bench))
    assert main(["run", str(path)]) == 0
    table = pd.read_csv(tmp_path / "out" / "report.csv", index_col="prior")
    assert list(table.index) == ["independent", "absorbing", "absorbing + maskgit sampler"]
    assert table.loc["independent", "nll_gap"] > 0 and table[["template_precision", "template_recall"]].notna().all().all()
    assert table.loc["absorbing", "nll_gap"] == pytest.approx(table.loc["absorbing + maskgit sampler", "nll_gap"])  # one network
    info = json.loads((tmp_path / "out" / "runs" / "absorbing-maskgit-sampler__seed0" / "metrics.json").read_text())["info"]
    assert "reused_training" in info and info["notes"]["nll"].startswith("ELBO, exact")
    assert table.loc["absorbing + maskgit sampler", "nfe"] <= 4
    report = (tmp_path / "out" / "report.md").read_text()
    assert "Image metrics off" in report and "NLL − H (bits)" in report
