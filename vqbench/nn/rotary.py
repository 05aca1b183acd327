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


def rotary_angles_2d(h: int, w: int, rot_dim: int, theta: float = 10000.0, device: torch.device | None = None) -> torch.Tensor:
    """Axial angles (h·w)×(rot_dim/2) in raster order: half the rotary dims encode the row, half the column."""
    if rot_dim % 4:
        raise ValueError(f"axial 2D rotary needs a rotary dimension divisible by 4, got {rot_dim}")
    rows = torch.arange(h, device=device).repeat_interleave(w)
    cols = torch.arange(w, device=device).repeat(h)
    return torch.cat([rotary_angles_1d(rows, rot_dim // 2, theta), rotary_angles_1d(cols, rot_dim // 2, theta)], dim=-1)


def apply_rotary(x: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """Rotate ``x`` (…×N×D) by ``angles`` (N×R/2, R ≤ D); channels past R pass through unchanged."""
    rot = angles.shape[-1] * 2
    x_rot, x_pass = x[..., :rot], x[..., rot:]
    x1, x2 = x_rot.float().chunk(2, dim=-1)
    cos, sin = angles.cos(), angles.sin()
    rotated = torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1).to(x.dtype)
    return torch.cat([rotated, x_pass], dim=-1) if x_pass.shape[-1] else rotated
