"""PNG outputs: sample grids and inpainting strips (written atomically)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .figures.tiles import enlarged, label_size, labelled, write_png
from .io import atomic_path


def grid(images: torch.Tensor, columns: int, pad: int = 2) -> np.ndarray:
    """uint8 B×3×H×W → one uint8 image of ``columns`` per row with ``pad`` white pixels between tiles."""
    b, _, h, w = images.shape
    rows = math.ceil(b / columns)
    canvas = np.full((rows * (h + pad) + pad, columns * (w + pad) + pad, 3), 255, dtype=np.uint8)
    for i, image in enumerate(images.permute(0, 2, 3, 1).numpy()):
        r, c = divmod(i, columns)
        canvas[pad + r * (h + pad) : pad + r * (h + pad) + h, pad + c * (w + pad) : pad + c * (w + pad) + w] = image
    return canvas


def save_png(path: str | Path, array: np.ndarray, scale: int = 1) -> None:
    image = Image.fromarray(array)
    if scale > 1:  # small images are enlarged without smoothing so codes stay visible
        image = image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")


def tile_scale(images: torch.Tensor, min_tile: int = 64) -> int:
    """Integer enlargement so every tile is at least ``min_tile`` pixels high."""
    return max(1, math.ceil(min_tile / images.shape[-2]))


def save_grid(path: str | Path, images: torch.Tensor, columns: int, title: str | None = None) -> None:
    """The first ``columns``² images, ``columns`` per row, under a header (``title``, else the sample range) with the
    column numbers above and the row numbers left of the tiles; the tile boxes go into the PNG (``TILES_KEY``)."""
    shown = images[: columns * columns]
    count, _, h, w = shown.shape
    scale, pad = tile_scale(images), 2
    body = enlarged(grid(shown, columns, pad), scale)
    step_x, step_y = (w + pad) * scale, (h + pad) * scale
    used = min(columns, count)
    heads = [(pad * scale + c * step_x, pad * scale + c * step_x + w * scale, str(c + 1)) for c in range(used)]
    sides = [(pad * scale + r * step_y, pad * scale + r * step_y + h * scale, str(r + 1)) for r in range(math.ceil(count / columns))]
    header = title or f"samples 1-{count}, by row and column"
    canvas, (dx, dy) = labelled(body, heads, sides, header, label_size(h * scale))
    boxes = []
    for i in range(count):
        (x0, x1, _), (y0, y1, _) = heads[i % columns], sides[i // columns]
        boxes.append((dx + int(x0), dy + int(y0), dx + int(x1), dy + int(y1)))
    write_png(path, canvas, boxes)


def save_inpainting_strip(path: str | Path, rows: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]], title: str | None = None) -> None:
    """One row per mask kind (labelled on the left): originals, masked inputs, inpainted results side by side, each
    group named above its tiles."""
    pad, scale = 2, tile_scale(next(iter(rows.values()))[0])
    blocks, spans = [], []
    for orig, masked, result in rows.values():
        parts = [grid(x, columns=len(x), pad=pad) for x in (orig, masked, result)]
        gap = np.full((parts[0].shape[0], 2 * pad, 3), 255, dtype=np.uint8)
        starts = np.cumsum([0] + [p.shape[1] + gap.shape[1] for p in parts])
        spans.append([(int(a), int(a) + p.shape[1]) for a, p in zip(starts, parts)])
        blocks.append(np.concatenate([parts[0], gap, parts[1], gap, parts[2]], axis=1))
    width = max(b.shape[1] for b in blocks)
    padded = [np.pad(b, ((0, 0), (0, width - b.shape[1]), (0, 0)), constant_values=255) for b in blocks]
    body = enlarged(np.concatenate(padded), scale)
    widest = spans[max(range(len(blocks)), key=lambda i: blocks[i].shape[1])]
    heads = [(a * scale, b * scale, name) for (a, b), name in zip(widest, ("original", "masked input", "inpainted"))]
    tops = np.cumsum([0] + [b.shape[0] for b in blocks]) * scale
    sides = [(float(tops[i]), float(tops[i + 1]), kind.removeprefix("inpaint_").replace("_", " ")) for i, kind in enumerate(rows)]
    tile = next(iter(rows.values()))[0].shape[-2] * scale
    write_png(path, labelled(body, heads, sides, title, label_size(tile))[0])
