"""Rotary position embeddings: 1D over a flattened sequence, and axial 2D over an h×w grid.

Angles have shape N×(rot_dim/2); ``apply_rotary`` rotates the first ``rot_dim`` channels of each head using the
half-split convention (channel i pairs with channel i + rot_dim/2).
"""

from __future__ import annotations

import torch


def _frequencies(n_freq: int, theta: float, device: torch.device | None) -> torch.Tensor:
    return theta ** (-torch.arange(n_freq, device=device, dtype=torch.float32) / n_freq)


def rotary_angles_1d(positions: torch.Tensor, rot_dim: int, theta: float = 10000.0) -> torch.Tensor:
    """Angles N×(rot_dim/2) for integer (or fractional) positions of shape N."""
    if rot_dim % 2:
        raise ValueError(f"rotary dimension must be even, got {rot_dim}")
    freqs = _frequencies(rot_dim // 2, theta, positions.device)
    return positions.float()[:, None] * freqs[None, :]


def rotary_angles_axial(rows: torch.Tensor, cols: torch.Tensor, rot_dim: int, theta: float = 10000.0) -> torch.Tensor:
    """Axial angles N×(rot_dim/2) for (row, column) positions: half the rotary dims encode the row, half the column."""
    if rot_dim % 4:
        raise ValueError(f"axial 2D rotary needs a rotary dimension divisible by 4, got {rot_dim}")
    return torch.cat([rotary_angles_1d(rows, rot_dim // 2, theta), rotary_angles_1d(cols, rot_dim // 2, theta)], dim=-1)


def rotary_angles_2d(h: int, w: int, rot_dim: int, theta: float = 10000.0, device: torch.device | None = None) -> torch.Tensor:
    """Axial angles (h·w)×(rot_dim/2) for an h×w grid in raster order."""
    rows = torch.arange(h, device=device).repeat_interleave(w)
    cols = torch.arange(w, device=device).repeat(h)
    return rotary_angles_axial(rows, cols, rot_dim, theta)


def apply_rotary(x: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """Rotate ``x`` (…×N×D) by ``angles`` (N×R/2, R ≤ D); channels past R pass through unchanged.

    Channel i pairs with channel i + R/2: [x1, x2] → [x1·cos − x2·sin, x2·cos + x1·sin], computed in ``x``'s dtype
    as one fused multiply-add (cos/sin tables are small and evaluated in float32 first)."""
    rot = angles.shape[-1] * 2
    cos = angles.cos().repeat(1, 2).to(x.dtype)
    sin = angles.sin()
    sin = torch.cat([-sin, sin], dim=-1).to(x.dtype)
    y = x[..., :rot]
    y1, y2 = y.chunk(2, dim=-1)
    rotated = torch.addcmul(y * cos, torch.cat([y2, y1], dim=-1), sin)
    return torch.cat([rotated, x[..., rot:]], dim=-1) if rot < x.shape[-1] else rotated
