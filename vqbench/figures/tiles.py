"""Labelled PNG canvases (a header line and row labels drawn with Pillow) whose tile boxes travel in a PNG text chunk,
so a figure can cut the tiles back out of ``samples.png``."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from PIL.PngImagePlugin import PngInfo

from ..io import atomic_path

TILES_KEY = "vqbench:tiles"  # JSON list of [left, top, right, bottom] per tile, in the PNG's own pixels
Box = tuple[int, int, int, int]
Span = tuple[float, float, str]  # (start, stop, text) along one side of the body, in body pixels


def font(size: int) -> Any:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: the fixed-size bitmap font
        return ImageFont.load_default()


def text_size(face: Any, text: str) -> tuple[int, int]:
    left, top, right, bottom = face.getbbox(text)
    return int(right - left), int(bottom - top)


def draw_text(draw: ImageDraw.ImageDraw, centre: tuple[float, float], text: str, face: Any, align: str = "centre") -> None:
    """``text`` centred on ``centre`` (or ending there with ``align="right"``), in black."""
    left, top, right, bottom = face.getbbox(text)
    x = centre[0] - (right - left) if align == "right" else centre[0] - (right - left) / 2
    draw.text((x - left, centre[1] - (bottom - top) / 2 - top), text, fill=(0, 0, 0), font=face)


def labelled(body: Image.Image, columns: Sequence[Span], rows: Sequence[Span], title: str | None, size: int) -> tuple[Image.Image, tuple[int, int]]:
    """``body`` on a white canvas with ``title`` and the column labels above it and the row labels left of it;
    returns the canvas and the body's offset (x, y)."""
    face = font(size)
    line = int(size * 1.6)
    left = max((text_size(face, text)[0] for _, _, text in rows), default=0) + (size if rows else 0)
    top = line * (bool(columns) + bool(title)) + (size // 2 if columns or title else 0)
    width = max(left + body.width, text_size(face, title)[0] + 2 * size if title else 0)
    canvas = Image.new("RGB", (width, top + body.height), (255, 255, 255))
    canvas.paste(body, (left, top))
    draw = ImageDraw.Draw(canvas)
    if title:
        draw_text(draw, (width / 2, line / 2), title, face)
    for start, stop, text in columns:
        draw_text(draw, (left + (start + stop) / 2, top - line / 2), text, face)
    for start, stop, text in rows:
        draw_text(draw, (left - size / 2, top + (start + stop) / 2), text, face, align="right")
    return canvas, (left, top)


def label_size(tile_height: int) -> int:
    """Font size in pixels for tiles ``tile_height`` pixels high (as enlarged)."""
    return max(11, min(22, tile_height // 4))


def write_png(path: str | Path, image: Image.Image, boxes: list[Box] | None = None) -> None:
    info = PngInfo()
    if boxes is not None:
        info.add_text(TILES_KEY, json.dumps([list(box) for box in boxes]))
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG", pnginfo=info)


def read_tiles(path: Path, columns: int, count: int) -> list[np.ndarray]:
    """The first ``count`` tiles of a grid PNG: from its boxes, or for a grid written without them (unlabelled, 2-pixel
    padding, enlarged to tiles of at least 64 pixels) from ``columns`` and the image size; [] when neither fits."""
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("RGB"))
        stored = image.text.get(TILES_KEY) if hasattr(image, "text") else None
    boxes = [tuple(box) for box in json.loads(stored)] if stored else _unlabelled_boxes(pixels.shape[1], pixels.shape[0], columns)
    return [pixels[top:bottom, left:right] for left, top, right, bottom in boxes[:count]]


def _unlabelled_boxes(width: int, height: int, columns: int, pad: int = 2) -> list[Box]:
    if columns < 1:
        return []
    for scale in range(1, 65):
        inner = width // scale - pad
        if width % scale or inner % columns or inner // columns <= pad:
            continue
        side = inner // columns - pad  # square tiles
        rows = (height // scale - pad) // (side + pad)
        if scale != max(1, math.ceil(64 / side)) or rows < 1 or height != scale * (rows * (side + pad) + pad):
            continue
        step = (side + pad) * scale
        return [
            (pad * scale + c * step, pad * scale + r * step, pad * scale + c * step + side * scale, pad * scale + r * step + side * scale)
            for r in range(rows)
            for c in range(columns)
        ]
    return []


def enlarged(array: np.ndarray, scale: int) -> Image.Image:
    """``array`` as an image enlarged ``scale`` times without smoothing, so codes stay visible."""
    image = Image.fromarray(array)
    return image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST) if scale > 1 else image
