"""A cell's PNG grids carry their labels: sample grids number their rows and columns under a header, inpainting strips
name each column group and each mask; the tile boxes stored in samples.png cut the samples back out."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from vqbench.figures import tiles
from vqbench.figures.tiles import read_tiles
from vqbench.images import grid, save_grid, save_inpainting_strip, save_png, tile_scale


def images(count: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (count, 3, 8, 8), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def enlarged(image: torch.Tensor, scale: int = 8) -> np.ndarray:
    return image.permute(1, 2, 0).numpy().repeat(scale, 0).repeat(scale, 1)


@pytest.fixture
def drawn(monkeypatch) -> list[str]:
    """Every text drawn on a canvas, in order."""
    texts: list[str] = []
    original = tiles.draw_text

    def record(draw, centre, text, face, align="centre"):
        texts.append(text)
        original(draw, centre, text, face, align)

    monkeypatch.setattr(tiles, "draw_text", record)
    return texts


def dark(region: np.ndarray) -> bool:
    return bool((region.min(axis=-1) < 100).any())


@pytest.mark.parametrize("title", [None, "absorbing [steps=8], seed 0"])
def test_a_sample_grid_numbers_its_rows_and_columns_under_a_header(tmp_path, drawn, title):
    shown = images(6)
    save_grid(tmp_path / "samples.png", shown, 4, title=title)
    assert drawn == [title or "samples 1-6, by row and column", "1", "2", "3", "4", "1", "2"]
    picture = np.asarray(Image.open(tmp_path / "samples.png").convert("RGB"))
    cut = read_tiles(tmp_path / "samples.png", 4, 16)
    assert len(cut) == 6 and all(np.array_equal(tile, enlarged(image)) for tile, image in zip(cut, shown))
    with Image.open(tmp_path / "samples.png") as image:
        left, top = json.loads(image.text[tiles.TILES_KEY])[0][:2]  # the first tile's corner
    assert dark(picture[: top - 8, left:]) and dark(picture[top:, : left - 8])  # header and row numbers are drawn
    assert picture.shape == (top + 2 * 80, left + 4 * 80, 3)  # 2 × 4 tiles of 64 pixels and 16 between, nothing else


def test_an_inpainting_strip_names_its_column_groups_and_masks(tmp_path, drawn):
    orig, masked, result = images(4, 1), images(4, 2), images(4, 3)
    save_inpainting_strip(tmp_path / "inpainting.png", {"inpaint_center": (orig, masked, result), "inpaint_upper_half": (orig, masked, result)})
    assert drawn == ["original", "masked input", "inpainted", "center", "upper half"]
    picture = np.asarray(Image.open(tmp_path / "inpainting.png").convert("RGB"))
    scale, pad, group = 8, 2, 4 * (8 + 2) + 2
    body_w, body_h = (3 * group + 2 * 2 * pad) * scale, 2 * (8 + 2 * pad) * scale
    top, left = picture.shape[0] - body_h, picture.shape[1] - body_w
    assert top > 0 and left > 0
    assert dark(picture[:top, left:]) and dark(picture[top:, :left])  # column names above, mask names on the left
    first = picture[top + pad * scale : top + (pad + 8) * scale, left + pad * scale : left + (pad + 8) * scale]
    assert np.array_equal(first, enlarged(orig[0]))
    start = left + (group + 2 * pad + pad) * scale  # the masked inputs after the originals and a gap
    assert np.array_equal(picture[top + pad * scale : top + (pad + 8) * scale, start : start + 8 * scale], enlarged(masked[0]))


def test_tiles_are_cut_from_grids_written_without_labels(tmp_path):
    shown = images(16, 4)
    save_png(tmp_path / "samples.png", grid(shown, 4), tile_scale(shown))  # a results folder from before the labels
    cut = read_tiles(tmp_path / "samples.png", 4, 5)
    assert len(cut) == 5 and all(np.array_equal(tile, enlarged(image)) for tile, image in zip(cut, shown))
    assert read_tiles(tmp_path / "samples.png", 0, 5) == []
