"""An image folder none of whose images can be read, and a ``max_images`` that is not a positive count, stop `vqbench
run` before anything is written (exit 2, one line naming the key), instead of surfacing later as a NaN tokenizer loss
or as a silently shortened image set. The loader itself stops a source with no readable image."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

import vqbench
from vqbench.cli import main
from vqbench.errors import DataError
from vqbench.interfaces import ImageSource
from vqbench.streaming import loader

from .conftest import SMOKE


def _folder(root: Path, good: int, garbage: int) -> Path:
    """``good`` readable 20×20 pngs, then (sorted after them) ``garbage`` .png files that are not images."""
    root.mkdir()
    for i in range(good):
        Image.new("RGB", (20, 20), (10 * i, 100, 200)).save(root / f"a{i:03d}.png")
    for i in range(garbage):
        (root / f"b{i:03d}.png").write_bytes(b"not an image at all " * 10)
    return root


def _run(tmp_path: Path, images: Path, capsys, **params) -> str:
    """`vqbench run` of the smoke benchmark on the folder ``images``; assert exit 2, one line, nothing written."""
    config = copy.deepcopy(SMOKE)
    config["dataset"] = {"name": "image_folder", "resolution": 16, "params": {"path": str(images), **params}, "test_fraction": 0.25}
    config["metrics"] = {"enabled": ["nll"]}  # valid for a dozen images: only the input under test is wrong
    config["out"], config["cache"] = str(tmp_path / "out"), str(tmp_path / "cache")
    path = tmp_path / "bench.yaml"
    path.write_text(yaml.safe_dump(config))
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main(["run", str(path)]) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == before, "bad input must leave nothing behind"
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("vqbench: error: "), err
    return err


def test_a_folder_of_unreadable_images_is_refused_before_anything_is_written(tmp_path, capsys):
    images = _folder(tmp_path / "images", good=0, garbage=12)
    err = _run(tmp_path, images, capsys)
    assert "dataset.params.path: none of the 12 image files" in err and "can be read" in err, err
    assert "b000.png" in err and "cannot identify image file" in err and "--set dataset.params.path=" in err, err


@pytest.mark.parametrize("value", [-50, 0])
def test_max_images_must_be_a_positive_count(tmp_path, capsys, value):
    images = _folder(tmp_path / "images", good=3, garbage=0)
    err = _run(tmp_path, images, capsys, max_images=value)
    assert f"dataset.params.max_images: must be a positive integer (or omitted for all images), got {value}" in err, err


def _source(images: Path, **params) -> ImageSource:
    cls = vqbench.registries().datasets.get("image_folder")
    return cls(cls.Config(path=str(images), **params), 16)


def test_the_readability_check_reads_only_up_to_the_first_readable_image(tmp_path, monkeypatch):
    images = tmp_path / "images"
    images.mkdir()
    (images / "a-broken.png").write_bytes(b"garbage")
    for i in range(20):
        Image.new("RGB", (20, 20)).save(images / f"b{i:03d}.png")
    source = _source(images)
    reads: list[int] = []
    image = type(source).image
    monkeypatch.setattr(type(source), "image", lambda self, index: reads.append(index) or image(self, index))
    source.check("dataset.params")  # one unreadable file among readable ones is skipped later, not refused
    assert reads == [0, 1]
    assert len(_source(images, max_images=5)) == 5


class Unreadable(ImageSource):
    """``count`` images, of which only those in ``readable`` decode."""

    def __init__(self, count: int, readable: set[int]):
        super().__init__(None, 4)
        self.count, self.readable = count, readable

    def __len__(self) -> int:
        return self.count

    def image(self, index: int) -> np.ndarray:
        if index not in self.readable:
            raise OSError(f"image {index}: truncated")
        return np.zeros((4, 4, 3), np.uint8)

    def fingerprint(self) -> str:
        return "unreadable"


def test_the_loader_stops_a_source_none_of_whose_images_can_be_read():
    # e.g. a tokenizer trained on it would otherwise get empty batches and report a NaN loss
    batches = loader(Unreadable(10, set()), [[0, 1], [2, 3]], workers=0)
    with pytest.raises(DataError, match=r"none of the 10 images of dataset Unreadable can be read \(e\.g\. image 0: truncated\)"):
        next(batches)


def test_the_loader_yields_an_empty_batch_when_other_images_can_be_read():
    source = Unreadable(10, {9})
    batches = list(loader(source, [[0, 1], [2, 9]], workers=0))
    assert [b.kept for b in batches] == [[], [9]] and source.skipped == {0, 1, 2}
