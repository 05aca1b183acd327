"""Reference statistics: `vqbench export --format fid-stats` writes mu/sigma as pytorch-fid and torch-fidelity read
them; `metrics.reference_stats` makes FID use such a file (the same number as from the features, torch-fidelity's own
function agreeing) and refuses one computed by another feature network before anything is written."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_features_to_statistics, fid_statistics_to_metric

import vqbench
from vqbench.cli import main
from vqbench.metrics.reference_stats import extractor_identity, write_fid_stats

from .conftest import SMOKE

CELL = "independent__seed0"
FIDELITY_TOLERANCE = 1e-9  # relative; vqbench computes FID through the same torch-fidelity function


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    """A finished smoke run (FID, KID, PRDC only), its fid-stats export and its cell's samples as npz."""
    root = tmp_path_factory.mktemp("stats")
    config = copy.deepcopy(SMOKE) | {"out": str(root / "out"), "cache": str(root / "cache")}
    config["metrics"] = {**config["metrics"], "enabled": ["fid", "kid", "prdc"]}
    (root / "bench.yaml").write_text(yaml.safe_dump(config))
    assert main(["run", str(root / "bench.yaml")]) == 0
    assert main(["export", str(root / "out"), "--format", "fid-stats", "--out", str(root / "export")]) == 0
    assert main(["export", str(root / "out"), "--format", "npz", "--out", str(root / "export"), "--no-reference"]) == 0
    return root


def with_stats(root: Path, tmp_path: Path, stats: Path | str) -> str:
    """The exported run's benchmark, writing to a new folder, with ``metrics.reference_stats: stats``."""
    config = yaml.safe_load((root / "bench.yaml").read_text())
    config["out"] = str(tmp_path / "out")
    config["metrics"]["reference_stats"] = str(stats)
    (tmp_path / "bench.yaml").write_text(yaml.safe_dump(config))
    return str(tmp_path / "bench.yaml")


def fid_of(out: Path) -> float:
    return json.loads((out / "runs" / CELL / "metrics.json").read_text())["values"]["fid"]


def real_features(root: Path) -> torch.Tensor:
    (path,) = (root / "cache" / "features").glob("random-cnn-*.pt")
    return torch.load(path, weights_only=True)["features"]


def sample_features(root: Path) -> torch.Tensor:
    """random-cnn features of the cell's exported samples, in the cell's batches (12) and memory layout."""
    images = torch.from_numpy(np.load(root / "export" / CELL / "images.npz")["arr_0"]).permute(0, 3, 1, 2)
    extractor = vqbench.registries().feature_extractors.get("random-cnn")(seed=0)
    with torch.inference_mode():
        return torch.cat([extractor(batch).double() for batch in images.split(12)])


def test_fid_stats_round_trip_equals_features_and_torch_fidelity(exported, tmp_path, capsys):
    stats_file = exported / "export" / "fid-stats.npz"
    data = np.load(stats_file)  # plain arrays and strings: no pickle needed
    assert data["mu"].dtype == np.float64 and data["sigma"].shape == (256, 256) and data["sigma"].dtype == np.float64
    expected = fid_features_to_statistics(real_features(exported))
    np.testing.assert_array_equal(data["mu"], expected["mu"])
    np.testing.assert_array_equal(data["sigma"], expected["sigma"])
    extractor = vqbench.registries().feature_extractors.get("random-cnn")(seed=0)
    assert {k: str(data[k]) for k in ("feature_network", "feature_weights_sha256")} == extractor_identity("random-cnn", extractor)
    assert int(data["num_features"]) == 30

    assert main(["run", with_stats(exported, tmp_path, stats_file)]) == 0
    from_file, from_features = fid_of(tmp_path / "out"), fid_of(exported / "out")
    assert from_file == from_features  # the file holds exactly the statistics of the real features
    fake = fid_features_to_statistics(sample_features(exported))
    fidelity = fid_statistics_to_metric({"mu": data["mu"], "sigma": data["sigma"]}, fake, verbose=False)[KEY_METRIC_FID]
    assert from_file == pytest.approx(fidelity, rel=FIDELITY_TOLERANCE)
    report = (tmp_path / "out" / "report.md").read_text()
    assert f"- **Reference statistics**: FID from fid-stats.npz (sha256 {data_sha(stats_file)[:12]}…, 30 features)" in report
    assert "computed with random-cnn" in report and "kid, prdc from the 30 real features" in report
    protocol = json.loads((tmp_path / "out" / "protocol.json").read_text())
    assert protocol["reference_stats"]["from_file"] == ["fid"]

    # an outside row scored against this results folder uses the file as well: the cell's own samples, the same FID
    assert main(["evaluate", str(tmp_path / "out"), "--samples", str(exported / "export" / CELL / "images.npz"), "--label", "x"]) == 0
    record = json.loads((tmp_path / "out" / "outside" / "x" / "metrics.json").read_text())
    assert record["values"]["fid"] == from_file


def data_sha(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_statistics_that_differ_from_the_features_change_fid(exported, tmp_path):
    """The file is really what FID uses: shifted statistics give the torch-fidelity FID against the shifted ones."""
    data = np.load(exported / "export" / "fid-stats.npz")
    shifted = tmp_path / "shifted.npz"
    np.savez(shifted, mu=data["mu"] + 0.5, sigma=data["sigma"], **{k: data[k] for k in ("feature_network", "feature_weights_sha256")})
    assert main(["run", with_stats(exported, tmp_path, shifted)]) == 0
    fake = fid_features_to_statistics(sample_features(exported))
    expected = fid_statistics_to_metric({"mu": data["mu"] + 0.5, "sigma": data["sigma"]}, fake, verbose=False)[KEY_METRIC_FID]
    assert fid_of(tmp_path / "out") == pytest.approx(expected, rel=FIDELITY_TOLERANCE)
    assert fid_of(tmp_path / "out") > fid_of(exported / "out") + 1.0


def test_a_file_without_identity_is_accepted_and_flagged(exported, tmp_path):
    data = np.load(exported / "export" / "fid-stats.npz")
    plain = tmp_path / "pytorch-fid.npz"
    np.savez(plain, mu=data["mu"], sigma=data["sigma"])  # what pytorch-fid's --save-stats writes
    assert main(["run", with_stats(exported, tmp_path, plain)]) == 0
    assert fid_of(tmp_path / "out") == fid_of(exported / "out")
    report = (tmp_path / "out" / "report.md").read_text()
    assert "FID from pytorch-fid.npz" in report and "**records no feature network** (e.g. written by pytorch-fid)" in report


@pytest.mark.parametrize("network, seed", [("random-cnn", 1), ("inception-v3-compat", 0)])
def test_another_feature_network_is_refused_before_anything_is_written(exported, tmp_path, capsys, network, seed):
    other = vqbench.registries().feature_extractors.get("random-cnn")(seed=seed)
    identity = extractor_identity(network, other)
    path = tmp_path / "other.npz"
    write_fid_stats(path, real_features(exported), identity)
    mine = extractor_identity("random-cnn", vqbench.registries().feature_extractors.get("random-cnn")(seed=0))
    for command in ("run", "validate"):
        capsys.readouterr()
        assert main([command, with_stats(exported, tmp_path, path)]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and err.startswith("vqbench: error: metrics.reference_stats: ")
        assert f"{path} was computed with {network} (weights sha256 {identity['feature_weights_sha256'][:12]}…)" in err
        assert f"this benchmark's feature network is random-cnn (weights sha256 {mine['feature_weights_sha256'][:12]}…)" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "arrays, message",
    [
        ({"mu": np.zeros(8), "sigma": np.eye(8)}, "holds statistics of (8,) / (8, 8) features, this benchmark's feature network gives 256"),
        ({"mu": np.zeros(256)}, "has no sigma"),
        ({"mu": np.full(256, np.nan), "sigma": np.eye(256)}, "NaN or infinite"),
        (None, "does not exist"),
    ],
)
def test_bad_statistics_files_exit_2(exported, tmp_path, capsys, arrays, message):
    path = tmp_path / "stats.npz"
    if arrays is not None:
        np.savez(path, **arrays)
    assert main(["run", with_stats(exported, tmp_path, path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "metrics.reference_stats" in err and message in err, err
    assert not (tmp_path / "out").exists()


def test_a_feature_network_trained_on_the_data_cannot_take_a_file(exported, tmp_path, capsys):
    config = yaml.safe_load(Path(with_stats(exported, tmp_path, exported / "export" / "fid-stats.npz")).read_text())
    config["metrics"]["feature_extractor"] = "classifier"
    (tmp_path / "classifier.yaml").write_text(yaml.safe_dump(config))
    assert main(["validate", str(tmp_path / "classifier.yaml")]) == 2
    err = capsys.readouterr().err
    assert "metrics.reference_stats: feature extractor 'classifier' gets its weights from the benchmark's own data" in err
