"""``hourglass``: the 2D-aware hourglass transformer of megapixel SUNDAE (and the original 1D hourglass).

Embedding → pre-blocks → downsample → valley (blocks, or a nested hourglass) → upsample + residual → post-blocks →
norm → logits. ``resample: 2d`` groups √k×√k spatial patches of the h×w grid; ``1d`` shortens the raster sequence by k.
Sides that are not multiples are zero-padded and cropped after. Bidirectional only (no causal shifting).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import nn

import vqbench
from vqbench.config import positive
from vqbench.errors import ConfigError
from vqbench.interfaces import Backbone
from vqbench.nn import CrossBlock, TransformerBlock, init_weights, rotary_angles_1d, rotary_angles_2d, rotary_angles_axial


@dataclass
class HourglassConfig:
    dim: int = 256
    depth: list[Any] = field(default_factory=lambda: [2, 4, 2])  # [pre, valley, post]; valley may nest: [2, [2, 4, 2], 2]
    heads: int = 8
    dim_head: int = 64
    mlp_ratio: float = 4.0
    dropout: float = 0.0
    shorten: int = 4  # k: tokens merged per downsampling (2d: √k × √k patches)
    resample: Literal["1d", "2d"] = "2d"
    updown: Literal["naive", "linear"] = "linear"
    attn_resampling: bool = True
    rotary: Literal["none", "1d", "2d"] = "2d"
    rotary_dim: int | None = None  # channels per head that rotate (default: all of dim_head)
    abs_pos: bool | None = None  # learned absolute positions at full resolution; None: exactly when rotary is none
    class_conditional: bool = False

    def validate(self, key: str) -> None:
        for name in ("dim", "heads", "dim_head", "mlp_ratio"):
            positive(key, name, getattr(self, name))
        check_depth(self.depth, f"{key}.depth")
        if self.shorten < 2:
            raise ConfigError(f"{key}.shorten", f"must be at least 2, got {self.shorten}")
        if self.resample == "2d" and math.isqrt(self.shorten) ** 2 != self.shorten:
            raise ConfigError(f"{key}.shorten", f"2d resampling needs a square factor (4, 9, 16, ...), got {self.shorten}")
        rot = self.rotary_dim or self.dim_head
        if self.rotary != "none" and (rot > self.dim_head or rot % (4 if self.rotary == "2d" else 2)):
            raise ConfigError(f"{key}.rotary_dim", f"must be ≤ dim_head and divisible by {4 if self.rotary == '2d' else 2}, got {rot}")

    @property
    def learned_positions(self) -> bool:
        """Learned absolute positions: as set, else exactly when there is no rotary (the reference's fallback)."""
        return self.rotary == "none" if self.abs_pos is None else self.abs_pos


def check_depth(depth: Any, key: str) -> None:
    if not (isinstance(depth, list) and len(depth) == 3 and isinstance(depth[0], int) and isinstance(depth[2], int)):
        raise ConfigError(key, f"expected [pre, valley, post] with valley an int or a nested [pre, valley, post], got {depth!r}")
    if isinstance(depth[1], list):
        check_depth(depth[1], f"{key}[1]")
    elif not isinstance(depth[1], int) or depth[1] < 1:
        raise ConfigError(f"{key}[1]", f"the valley needs at least one block, got {depth[1]!r}")


@dataclass(frozen=True)
class GridLayout:
    """Tokens of an h×w grid in raster order (2d resampling)."""

    h: int
    w: int

    def bucket(self, x: torch.Tensor, k: int) -> tuple[torch.Tensor, GridLayout]:
        """B×(h·w)×d → zero-padded √k×√k patches B×m×k×d, and the m-token child grid."""
        s = math.isqrt(k)
        hp, wp = -(-self.h // s) * s, -(-self.w // s) * s
        grid = F.pad(rearrange(x, "b (h w) d -> b h w d", h=self.h), (0, 0, 0, wp - self.w, 0, hp - self.h))
        return rearrange(grid, "b (h s1) (w s2) d -> b (h w) (s1 s2) d", s1=s, s2=s), GridLayout(hp // s, wp // s)

    def unbucket(self, buckets: torch.Tensor, k: int) -> torch.Tensor:
        s = math.isqrt(k)
        grid = rearrange(buckets, "b (h w) (s1 s2) d -> b (h s1) (w s2) d", w=-(-self.w // s), s1=s)
        return rearrange(grid[:, : self.h, : self.w], "b h w d -> b (h w) d")

    def angles(self, rotary: str, rot_dim: int, device: torch.device) -> torch.Tensor:
        if rotary == "2d":
            return rotary_angles_2d(self.h, self.w, rot_dim, device=device)
        return rotary_angles_1d(torch.arange(self.h * self.w, device=device), rot_dim)


@dataclass(frozen=True)
class SeqLayout:
    """A raster sequence of n tokens, each spanning ``span`` full-resolution tokens of a grid ``width`` wide (1d)."""

    n: int
    span: int
    width: int

    def bucket(self, x: torch.Tensor, k: int) -> tuple[torch.Tensor, SeqLayout]:
        m = -(-self.n // k)
        padded = F.pad(x, (0, 0, 0, m * k - self.n))
        return rearrange(padded, "b (m k) d -> b m k d", k=k), SeqLayout(m, self.span * k, self.width)

    def unbucket(self, buckets: torch.Tensor, k: int) -> torch.Tensor:
        return rearrange(buckets, "b m k d -> b (m k) d")[:, : self.n]

    def angles(self, rotary: str, rot_dim: int, device: torch.device) -> torch.Tensor:
        if rotary == "1d":
            return rotary_angles_1d(torch.arange(self.n, device=device), rot_dim)
        # 2d: the mean (row, column) of the pooled full-resolution tokens, at this level's own scale
        idx = torch.arange(self.n * self.span, device=device).view(self.n, self.span)
        scale = math.sqrt(self.span)
        rows = (idx // self.width).float().mean(1) / scale
        cols = (idx % self.width).float().mean(1) / scale
        return rotary_angles_axial(rows, cols, rot_dim)


class Downsample(nn.Module):
    """Patches B×m×k×d → B×m×d: mean pool (naive) or concatenate + project (linear)."""

    def __init__(self, dim: int, k: int, linear: bool):
        super().__init__()
        self.proj = nn.Linear(dim * k, dim) if linear else None

    def forward(self, buckets: torch.Tensor) -> torch.Tensor:
        if self.proj is None:
            return buckets.mean(dim=2)
        return self.proj(rearrange(buckets, "b m k d -> b m (k d)"))


class Upsample(nn.Module):
    """B×m×d → B×m×k×d: repeat (naive) or project + unfold (linear)."""

    def __init__(self, dim: int, k: int, linear: bool):
        super().__init__()
        self.k = k
        self.proj = nn.Linear(dim, dim * k) if linear else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.proj is None:
            return repeat(x, "b m d -> b m k d", k=self.k)
        return rearrange(self.proj(x), "b m (k d) -> b m k d", k=self.k)


class HourglassLevel(nn.Module):
    def __init__(self, cfg: HourglassConfig, depth: list[Any]):
        super().__init__()
        self.k = cfg.shorten

        def blocks(n: int) -> nn.ModuleList:
            return nn.ModuleList(TransformerBlock(cfg.dim, cfg.heads, cfg.dim_head, cfg.mlp_ratio, cfg.dropout) for _ in range(n))

        self.pre, self.post = blocks(depth[0]), blocks(depth[2])
        self.valley = HourglassLevel(cfg, depth[1]) if isinstance(depth[1], list) else blocks(depth[1])
        linear = cfg.updown == "linear"
        self.down, self.up = Downsample(cfg.dim, self.k, linear), Upsample(cfg.dim, self.k, linear)
        if cfg.attn_resampling:
            self.resample_pre = CrossBlock(cfg.dim, cfg.heads, cfg.dim_head, cfg.mlp_ratio, cfg.dropout)
            self.resample_post = CrossBlock(cfg.dim, cfg.heads, cfg.dim_head, cfg.mlp_ratio, cfg.dropout)

    def forward(self, x: torch.Tensor, layout: GridLayout | SeqLayout, angles, rows: torch.Tensor | None = None) -> torch.Tensor:
        """``rows`` (B×N bool): return only those positions (K×d), the last post-block running on them alone."""
        x = run_blocks(self.pre, x, angles(layout))
        buckets, child = layout.bucket(x, self.k)  # the padded pre-valley tokens are also the residual
        b, m, k, d = buckets.shape
        down = self.down(buckets)
        if hasattr(self, "resample_pre"):  # the pooled token attends to the tokens it pooled
            down = self.resample_pre(down.reshape(b * m, 1, d), buckets.reshape(b * m, k, d)).view(b, m, d)
        if isinstance(self.valley, HourglassLevel):
            valley = self.valley(down, child, angles)
        else:
            valley = run_blocks(self.valley, down, angles(child))
        up = self.up(valley) + buckets
        if hasattr(self, "resample_post"):  # every upsampled token attends to its valley token
            up = self.resample_post(up.reshape(b * m, k, d), valley.reshape(b * m, 1, d)).view(b, m, k, d)
        return run_blocks(self.post, layout.unbucket(up, self.k), angles(layout), rows)


def run_blocks(blocks: nn.ModuleList, x: torch.Tensor, angles: torch.Tensor | None, rows: torch.Tensor | None = None) -> torch.Tensor:
    """The blocks in turn; with ``rows`` (B×N bool) only those positions of the output (K×d)."""
    last = len(blocks) - 1 if rows is not None else len(blocks)
    for block in blocks[:last]:
        x = block(x, angles)
    if rows is None:
        return x
    return blocks[last].forward_rows(x, rows, angles) if last >= 0 else x[rows]


class Hourglass(Backbone):
    """2D-aware hourglass transformer (megapixel SUNDAE): √k×√k patch resampling, axial rotary, nestable valley."""

    Config = HourglassConfig

    def __init__(
        self, config: HourglassConfig, vocab_size: int, num_logits: int, latent_shape: tuple[int, int], num_classes: int = 0, causal: bool = False
    ):
        super().__init__()
        if causal:
            raise ConfigError("backbone", "the hourglass backbone is bidirectional (no causal shifting)")
        self.config, self.latent_shape = config, tuple(latent_shape)
        h, w = self.latent_shape
        self.embed = nn.Embedding(vocab_size, config.dim)
        self.pos = nn.Parameter(torch.randn(1, h * w, config.dim) * 0.02) if config.learned_positions else None
        self.class_embed = nn.Embedding(num_classes, config.dim) if config.class_conditional and num_classes else None
        self.root = HourglassLevel(config, config.depth)
        self.norm = nn.LayerNorm(config.dim)
        self.to_logits = nn.Linear(config.dim, num_logits)
        self.apply(init_weights)  # positions keep their own N(0, 0.02) draw
        self.layout = GridLayout(h, w) if config.resample == "2d" else SeqLayout(h * w, 1, w)
        self._angles: dict[tuple, torch.Tensor | None] = {}

    def angles(self, layout: GridLayout | SeqLayout) -> torch.Tensor | None:
        if self.config.rotary == "none":
            return None
        device = self.embed.weight.device
        key = (layout, device)
        if key not in self._angles:
            self._angles[key] = layout.angles(self.config.rotary, self.config.rotary_dim or self.config.dim_head, device)
        return self._angles[key]

    def forward(self, codes: torch.Tensor, labels: torch.Tensor | None = None, rows: torch.Tensor | None = None) -> torch.Tensor:
        """Logits B×N×V, or with ``rows`` (B×N bool) those positions' only (K×V, less work in the last block)."""
        x = self.embed(codes)
        if self.pos is not None:
            x = x + self.pos
        if self.class_embed is not None and labels is not None:
            x = x + self.class_embed(labels)[:, None]
        return self.to_logits(self.norm(self.root(x, self.layout, self.angles, rows)))

    def logits_at(self, codes: torch.Tensor, rows: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self(codes, labels, rows=rows)


@vqbench.hookimpl
def vqbench_register_backbones(registry):
    registry.register("hourglass", Hourglass)


@vqbench.hookimpl
def vqbench_conformance_cases():
    from vqbench.testing import HOURGLASS, BackboneCase  # test-only (needs pytest), so imported here

    return [
        BackboneCase({**HOURGLASS, "resample": resample, "rotary": rotary, "shorten": 4}, id=f"hourglass-{resample}-rotary{rotary}")
        for resample in ("1d", "2d")
        for rotary in ("none", "1d", "2d")
    ]
