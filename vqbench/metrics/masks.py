"""Inpainting mask suite (pixel masks, True = regenerate) and their mapping to latent token masks."""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

MaskKind = Literal["center", "upper_half", "lower_half", "strokes"]
MASK_KINDS: tuple[MaskKind, ...] = ("center", "upper_half", "lower_half", "strokes")


def center_box(size: int, fraction: float = 0.5) -> np.ndarray:
    mask = np.zeros((size, size), dtype=bool)
    lo, hi = int(round(size * (1 - fraction) / 2)), int(round(size * (1 + fraction) / 2))
    mask[lo:hi, lo:hi] = True
    return mask


def half(size: int, upper: bool) -> np.ndarray:
    mask = np.zeros((size, size), dtype=bool)
    if upper:
        mask[: size // 2] = True
    else:
        mask[size // 2 :] = True
    return mask


def strokes(size: int, rng: np.random.Generator, count: tuple[int, int] = (2, 5)) -> np.ndarray:
    """Random free-form brush strokes: polylines of 3-6 segments with a random width."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
    mask = np.zeros((size, size), dtype=bool)
    for _ in range(rng.integers(*count, endpoint=True)):
        point = rng.uniform(0, size, 2)
        radius = rng.uniform(0.03, 0.08) * size
        for _ in range(rng.integers(3, 7)):
            angle, length = rng.uniform(0, 2 * np.pi), rng.uniform(0.1, 0.35) * size
            nxt = np.clip(point + length * np.array([np.sin(angle), np.cos(angle)]), 0, size)
            seg = nxt - point
            t = np.clip(((yy - point[0]) * seg[0] + (xx - point[1]) * seg[1]) / max(seg @ seg, 1e-9), 0, 1)
            mask |= (yy - point[0] - t * seg[0]) ** 2 + (xx - point[1] - t * seg[1]) ** 2 <= radius**2
            point = nxt
    return mask


def pixel_masks(kind: str, size: int, count: int, seed: int = 0) -> torch.Tensor:
    """``count`` pixel masks (bool count×size×size) of one kind; strokes differ per image, seeded."""
    if kind == "center":
        masks = [center_box(size)] * count
    elif kind in ("upper_half", "lower_half"):
        masks = [half(size, upper=kind == "upper_half")] * count
    elif kind == "strokes":
        rng = np.random.default_rng([seed, 7])
        masks = [strokes(size, rng) for _ in range(count)]
    else:
        raise ValueError(f"unknown mask kind {kind!r}; use one of {', '.join(MASK_KINDS)}")
    return torch.from_numpy(np.stack(masks))


def latent_regenerate_mask(pixel_mask: torch.Tensor, factor: int, cell_threshold: float = 0.0) -> torch.Tensor:
    """Pixel mask B×H×W → token mask B×(H/f)×(W/f): a token is regenerated when more than ``cell_threshold`` of its
    f×f cell is masked (0.0: any masked pixel regenerates the token)."""
    fraction = F.avg_pool2d(pixel_mask.float()[:, None], kernel_size=factor)[:, 0]
    return fraction > cell_threshold
