"""Dataset plugins: toyfaces determinism and factors; image_folder conversions, skips and errors."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import vqbench
from vqbench.errors import ConfigError
from vqbench.runner.data import split_indices


def source(name, resolution, **params):
    cls = vqbench.registries().datasets.get(name)
    return cls(cls.Config(**params), resolution)


def test_toyfaces_is_deterministic_and_renders_any_resolution():
    small, big = source("toyfaces", 32, count=10), source("toyfaces", 1024, count=10)
    a, b = small.image(3), source("toyfaces", 32, count=10).image(3)
    assert a.dtype == np.uint8 and a.shape == (32, 32, 3) and np.array_equal(a, b)
    large = big.image(3)
    assert large.shape == (1024, 1024, 3)
    # the same face at both sizes: the big one, box-downsampled, is close to the small one
    down = large.reshape(32, 32, 32, 32, 3).mean(axis=(1, 3))
    assert np.abs(down - a).mean() < 6
    assert not np.array_equal(small.image(3), small.image(4))
    assert source("toyfaces", 32, count=10, seed=1).fingerprint() != small.fingerprint()


def test_toyfaces_labels_are_the_generative_factors():
    ds = source("toyfaces", 16, count=400)
    labels = ds.labels()
    assert labels.shape == (400, len(ds.label_names)) and labels.dtype == np.int64
    for column, cardinality in enumerate((3, 6, 4, 5, 3, 3, 4, 2, 6, 7, 7)):
        assert set(np.unique(labels[:, column])) == set(range(cardinality))  # every factor value occurs
    with pytest.raises(IndexError):
        ds.image(400)


def test_split_is_deterministic_and_disjoint():
    train, test = split_indices(100, 0.2, seed=3)
    assert len(test) == 20 and len(train) == 80 and not set(train) & set(test)
    assert np.array_equal(test, split_indices(100, 0.2, seed=3)[1])
    assert not np.array_equal(test, split_indices(100, 0.2, seed=4)[1])


def test_image_folder_converts_modes_crops_and_skips_unreadable(tmp_path, caplog):
    (tmp_path / "sub").mkdir()
    Image.new("L", (40, 20), 128).save(tmp_path / "grey.png")
    Image.new("RGBA", (20, 40), (255, 0, 0, 128)).save(tmp_path / "sub" / "rgba.webp")
    Image.new("CMYK", (30, 30), (0, 255, 0, 0)).save(tmp_path / "cmyk.jpg")
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    (tmp_path / "notes.txt").write_text("ignored")
    ds = source("image_folder", 16, path=str(tmp_path))
    ds.check("dataset.params")
    assert len(ds) == 4  # recursive, by extension
    images, kept = ds.batch(range(len(ds)))
    assert images.shape == (3, 3, 16, 16) and len(kept) == 3
    assert len(ds.skipped) == 1 and "broken.jpg" in caplog.text
    cmyk = ds.image([p.name for p in ds.files].index("cmyk.jpg"))
    assert cmyk.shape == (16, 16, 3) and cmyk[..., 1].mean() < 100  # CMYK magenta → red-ish RGB, low green


def test_image_folder_missing_or_empty_folder_names_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"dataset\.params\.path: image folder .*nope.* does not exist.*--set dataset\.params\.path="):
        source("image_folder", 16, path=str(tmp_path / "nope")).check("dataset.params")
    with pytest.raises(ConfigError, match="has no .jpg"):
        source("image_folder", 16, path=str(tmp_path)).check("dataset.params")
