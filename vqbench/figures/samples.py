"""The samples of every report row side by side: the first seed's first samples, one labelled row per report row,
cut from the cell's ``samples.png`` (or, without decoded images, its code grids from ``samples.npy``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from ..io import read_json
from .style import DOUBLE, pyplot, styled
from .tiles import read_tiles

MIN_TILE, GAP = 0.5, 0.05  # inches: the smallest tile that still reads, the space between rows


def cell_folder(out: Path, cell: str) -> Path:
    """``runs/<cell>`` for a planned cell, ``outside/<folder>`` for a row scored by ``vqbench evaluate``."""
    return out / cell if "/" in cell else out / "runs" / cell


def first_cells(long: pd.DataFrame) -> dict[str, tuple[str, int]]:
    """Report row → (cell, seed) of its lowest seed, rows in report order."""
    cells = long.drop_duplicates(["row", "cell"])[["row", "cell", "seed"]]
    first: dict[str, tuple[str, int]] = {}
    for row, cell, seed in cells.itertuples(index=False):
        if row not in first or seed < first[row][1]:
            first[row] = (str(cell), int(seed))
    return first


def _codes(folder: Path, count: int) -> list[np.ndarray]:
    """Code grids as RGB tiles, colour = code index over the codebook (viridis)."""
    if not (folder / "samples.npy").is_file():
        return []
    from matplotlib import colormaps

    codes = np.load(folder / "samples.npy")[:count]
    config = read_json(folder / "config.json") if (folder / "config.json").is_file() else {}
    size = max(int(config.get("codebook_size") or 0), int(codes.max()) + 1 if codes.size else 1)
    rgb = colormaps["viridis"](codes / max(size - 1, 1))[..., :3]
    return [(tile * 255).round().astype(np.uint8) for tile in rgb]


def row_tiles(out: Path, cell: str, count: int) -> tuple[list[np.ndarray], bool]:
    """(the first ``count`` samples of ``cell`` as RGB arrays, whether they are decoded images)."""
    folder = cell_folder(out, cell)
    if (folder / "samples.png").is_file():
        tiles = read_tiles(folder / "samples.png", grid_size(out, folder), count)
        if tiles:
            return tiles, True
    return _codes(folder, count), False


def grid_size(out: Path, folder: Path) -> int:
    """Columns of a cell's ``samples.png`` (only needed for grids written without their tile boxes)."""
    for path in (folder / "metrics.json", out / "protocol.json"):
        if path.is_file():
            record = read_json(path)
            size = (record.get("protocol") or record).get("sampling", {}).get("grid_size")
            if size:
                return int(size)
    return 0


def _strip(tiles: list[np.ndarray], count: int, shape: tuple[int, int]) -> np.ndarray:
    """``count`` tiles resized to ``shape`` (nearest) side by side with white gaps; missing ones stay white."""
    h, w = shape
    gap = max(1, w // 16)
    strip = np.full((h, count * (w + gap) - gap, 3), 255, dtype=np.uint8)
    for i, tile in enumerate(tiles[:count]):
        if tile.shape[:2] != (h, w):
            tile = np.asarray(Image.fromarray(tile).resize((w, h), Image.Resampling.NEAREST))
        strip[:, i * (w + gap) : i * (w + gap) + w] = tile
    return strip


def _wrapped(row: str, width: float) -> str:
    """Long row names break before their variant (``label\n[steps=8]``) so the tiles keep their room."""
    return row.replace(" [", "\n[", 1) if len(row) * 8 * 0.55 / 72 > 0.3 * width else row


def build(out: Path, long: pd.DataFrame, width: float = DOUBLE, count: int = 8) -> tuple[Any, str] | None:
    """(figure, caption): one row per report row, its name on the left; None when no row has samples to show."""
    from matplotlib.font_manager import FontProperties

    first = first_cells(long)
    with styled():
        fig = pyplot().figure(figsize=(width, 1.0))
        renderer = fig.canvas.get_renderer()
        font = FontProperties(size=pyplot().rcParams["axes.labelsize"])
        names = {row: _wrapped(row, width) for row in first}
        widest = max(renderer.get_text_width_height_descent(line, font, ismath=False)[0] for name in names.values() for line in name.split("\n"))
        label_in = min(widest / fig.dpi + 0.12, 0.6 * width)  # a longer name overhangs the figure edge rather than leaving no room
        shown = max(1, min(count, int((width - label_in) / MIN_TILE)))
        found = {row: row_tiles(out, cell, shown) for row, (cell, _) in first.items()}
        tiles = [t for t, _ in found.values() if t]
        if not tiles:
            pyplot().close(fig)
            return None
        shape = tiles[0][0].shape[:2]
        strips = {row: _strip(images, shown, shape) for row, (images, _) in found.items()}
        axes_w = width - label_in - 0.02
        axes_h = axes_w * shape[0] / next(iter(strips.values())).shape[1]
        height = len(strips) * (axes_h + GAP) + GAP
        fig.set_size_inches(width, height)
        for i, (row, strip) in enumerate(strips.items()):
            ax = fig.add_axes((label_in / width, 1 - (i + 1) * (axes_h + GAP) / height, axes_w / width, axes_h / height))
            ax.imshow(strip, interpolation="nearest", aspect="auto")
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            ax.set_ylabel(names[row], rotation=0, ha="right", va="center", multialignment="right", labelpad=4)
    kinds = {decoded for images, decoded in found.values() if images}
    what = {frozenset({True}): "decoded images", frozenset({False}): "code grids coloured by code index, viridis, dark = low"}.get(
        frozenset(kinds), "decoded images, or code grids coloured by code index where a row has no decoded images"
    )
    seeds = sorted({seed for _, seed in first.values()})
    caption = (
        f"The first {shown} samples of every report row ({what}), from the row's lowest seed (seed {', '.join(map(str, seeds))}); "
        "row names as in the report's tables. Samples are not selected."
    )
    return fig, caption
