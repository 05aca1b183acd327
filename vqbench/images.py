"""PNG outputs: sample grids and inpainting strips (written atomically)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

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


def save_grid(path: str | Path, images: torch.Tensor, columns: int) -> None:
    save_png(path, grid(images[: columns * columns], columns), tile_scale(images))


def save_inpainting_strip(path: str | Path, rows: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]) -> None:
    """One row per mask kind: originals, masked inputs, inpainted results side by side."""
    blocks = [grid(torch.cat([orig, masked, result]), columns=len(orig) * 3) for orig, masked, result in rows.values()]
    width = max(b.shape[1] for b in blocks)
    padded = [np.pad(b, ((0, 0), (0, width - b.shape[1]), (0, 0)), constant_values=255) for b in blocks]
    save_png(path, np.concatenate(padded), tile_scale(next(iter(rows.values()))[0]))
