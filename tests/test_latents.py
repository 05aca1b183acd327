"""LatentDataset format v1: round trip, dtypes, validation of bad directories."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from vqbench import latents
from vqbench.errors import DataError


def test_round_trip_is_exact_and_memory_mapped(tmp_path):
    codes = np.random.default_rng(0).integers(0, 1024, size=(10, 4, 5))
    labels = np.arange(10)[:, None]
    latents.write(tmp_path / "d", codes, 1024, labels=labels, split={"name": "train"})
    ds = latents.open(tmp_path / "d")
    assert isinstance(ds.codes, np.memmap) and ds.codes.dtype == np.uint16
    assert np.array_equal(np.asarray(ds.codes), codes) and np.array_equal(np.asarray(ds.labels), labels)
    assert ds.latent_shape == (4, 5) and ds.codebook_size == 1024 and len(ds) == 10
    assert ds.meta["split"] == {"name": "train"} and ds.meta["version"] == 1
    t = ds.tensor([1, 3])
    assert t.dtype == torch.int64 and t.shape == (2, 4, 5)


def test_large_codebooks_use_int32(tmp_path):
    codes = np.array([[[70000]]])
    latents.write(tmp_path / "d", codes, 70001)
    assert latents.open(tmp_path / "d").codes.dtype == np.int32


def test_write_rejects_out_of_range_codes(tmp_path):
    with pytest.raises(ValueError, match=r"\[0, 8\)"):
        latents.write(tmp_path / "d", np.full((1, 2, 2), 8), 8)
    assert not (tmp_path / "d").exists()


def _corrupt(path, **changes):
    meta = json.loads((path / "meta.json").read_text())
    meta.update(changes)
    (path / "meta.json").write_text(json.dumps(meta))


@pytest.mark.parametrize(
    "change, message",
    [
        ({"version": 2}, "version 2 is not supported"),
        ({"codebook_size": 4}, "out of range for codebook size 4"),
        ({"count": 3}, "does not match meta.json"),
        ({"codes_sha256": "0" * 64}, "checksum does not match"),
        ({"dtype": "int32"}, "dtype"),
    ],
)
def test_open_rejects_bad_meta(tmp_path, change, message):
    latents.write(tmp_path / "d", np.random.default_rng(1).integers(0, 16, size=(2, 3, 3)), 16)
    _corrupt(tmp_path / "d", **change)
    with pytest.raises(DataError, match=message) as err:
        latents.open(tmp_path / "d")
    assert str(tmp_path / "d") in str(err.value)


def test_open_rejects_missing_files(tmp_path):
    with pytest.raises(DataError, match="directory not found"):
        latents.open(tmp_path / "nope")
    latents.write(tmp_path / "d", np.zeros((1, 2, 2), dtype=int), 4)
    (tmp_path / "d" / "codes.npy").unlink()
    with pytest.raises(DataError, match="codes.npy: file not found"):
        latents.open(tmp_path / "d")
    (tmp_path / "d" / "meta.json").write_text("{not json")
    with pytest.raises(DataError, match="meta.json: not valid JSON"):
        latents.open(tmp_path / "d")


def test_rewrite_replaces_atomically(tmp_path):
    latents.write(tmp_path / "d", np.zeros((1, 2, 2), dtype=int), 4)
    latents.write(tmp_path / "d", np.ones((3, 2, 2), dtype=int), 4)
    assert len(latents.open(tmp_path / "d")) == 3
    assert [p.name for p in tmp_path.iterdir()] == ["d"]  # no temp dirs left behind
