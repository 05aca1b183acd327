"""Inpainting quality over a mask suite, on composites (original pixels pasted back outside the mask, as LaMa and
MAT evaluate): full-image LPIPS and KID (FID optionally) of the composites, PSNR over the kept tokens' pixels against
the tokenizer's own reconstruction, and the LPIPS map inside the mask as a diagnostic."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from ..errors import ConfigError
from ..interfaces import Column, Metric, uint8_to_float
from .fid import fid_from_features, kid_all_pairs
from .lpips_net import load_lpips, lpips_backbone_is_random, lpips_weights_label
from .masks import MASK_KINDS, MaskKind, latent_regenerate_mask, pixel_masks


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-image mean of ``values`` (B×H×W) over ``mask`` (B×H×W); NaN where the mask is empty."""
    mask = mask.to(values.dtype)
    return (values * mask).sum(dim=(1, 2)) / mask.sum(dim=(1, 2))


def psnr_in_region(a: torch.Tensor, b: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """PSNR (dB) per image between uint8 images a, b (B×3×H×W) over ``region`` (B×H×W)."""
    se = (a.double() - b.double()).pow(2).mean(dim=1)
    mse = masked_mean(se, region)
    return 10.0 * torch.log10(255.0**2 / mse.clamp_min(1e-10))


def composite(original: torch.Tensor, inpainted: torch.Tensor, pixel_mask: torch.Tensor) -> torch.Tensor:
    """mask·inpainted + (1 − mask)·original for images B×3×H×W and a pixel mask B×H×W."""
    return torch.where(pixel_mask[:, None], inpainted, original)


def kept_token_pixels(keep: torch.Tensor, factor: int) -> torch.Tensor:
    """Token mask B×h×w → pixel mask B×(h·f)×(w·f) of the pixels under kept tokens."""
    return keep.repeat_interleave(factor, dim=1).repeat_interleave(factor, dim=2)


def lpips_pairs(model: torch.nn.Module, a: torch.Tensor, b: torch.Tensor, device: torch.device, batch: int = 32) -> torch.Tensor:
    """LPIPS of uint8 image pairs: one value per image (B), or the spatial map (B×H×W) for a spatial model."""
    out = torch.cat([model(uint8_to_float(x).to(device), uint8_to_float(y).to(device)).cpu() for x, y in zip(a.split(batch), b.split(batch))])
    return out[:, 0].double().flatten(1).squeeze(1) if out.shape[-1] == 1 else out[:, 0].double()


@dataclass
class InpaintingConfig:
    masks: list[MaskKind] = field(default_factory=lambda: list(MASK_KINDS))
    num_images: int = 64
    cell_threshold: float = 0.0  # regenerate a token when more than this fraction of its cell is masked
    lpips_net: Literal["alex", "vgg", "squeeze"] = "alex"
    fid: bool = False  # FID of the composites; needs num_images ≥ the feature dimension (KID is always reported)
    seed: int = 0  # stroke masks and the offline LPIPS backbone: fixed, so every cell sees the same ones
    lpips_weights: str | None = None  # the backbone's torchvision weights file (offline); default: torchvision's cache

    def validate(self, key: str) -> None:
        if self.num_images < 2:
            raise ConfigError(f"{key}.num_images", f"needs at least 2 images for KID, got {self.num_images}")
        if not 0.0 <= self.cell_threshold < 1.0:
            raise ConfigError(
                f"{key}.cell_threshold",
                f"must lie in [0, 1) (a token is regenerated when more than this fraction of its cell is masked), got {self.cell_threshold!r}",
            )
        if not self.masks:
            raise ConfigError(f"{key}.masks", "list at least one mask kind")
        if self.lpips_weights is not None and not Path(self.lpips_weights).expanduser().is_file():
            raise ConfigError(
                f"{key}.lpips_weights", f"{self.lpips_weights!r} does not exist; give the torchvision weights file of the {self.lpips_net} backbone"
            )


class InpaintingMetric(Metric):
    """Mask suite (centre, halves, strokes) on composites: full-image LPIPS, KID (FID optional), kept-token PSNR;
    LPIPS inside the mask as a diagnostic."""

    Config = InpaintingConfig
    needs_images = True
    group = "inpainting"

    def columns(self, config: InpaintingConfig) -> dict[str, Column]:
        n = config.num_images
        lpips = "LPIPS, random backbone — not comparable" if lpips_backbone_is_random(config.lpips_net, config.lpips_weights) else "LPIPS"
        cols = {}
        for kind in config.masks:
            cols[f"inpaint_{kind}_lpips"] = Column("lower", f"{kind} {lpips} (composite, N={n})", 4)
            cols[f"inpaint_{kind}_kid"] = Column("lower", f"{kind} KID (raw; composite, N={n})", 4)
            if config.fid:
                cols[f"inpaint_{kind}_fid"] = Column("lower", f"{kind} FID (composite, N={n})", 2)
            cols[f"inpaint_{kind}_psnr"] = Column("higher", f"{kind} kept-token PSNR vs reconstruction", 2)
            cols[f"inpaint_{kind}_lpips_in_mask"] = Column("none", f"{kind} {lpips} map in mask (diagnostic)", 4)
        return cols

    @torch.inference_mode()
    def compute(self, ctx, config: InpaintingConfig) -> dict[str, float]:
        if not ctx.prior.supports_inpainting:
            return {name: math.nan for name in self.columns(config)}
        images, codes, labels = ctx.inpainting_inputs(config.num_images)
        if len(images) != config.num_images:
            raise ValueError(f"inpainting needs {config.num_images} held-out images, {len(images)} are available")
        reconstruction = ctx.decode(codes)
        lpips_full, real = load_lpips(config.lpips_net, seed=config.seed, weights=config.lpips_weights, key="metrics.inpainting.lpips_weights")
        lpips_map, _ = load_lpips(
            config.lpips_net, seed=config.seed, spatial=True, weights=config.lpips_weights, key="metrics.inpainting.lpips_weights"
        )
        lpips_full.to(ctx.device), lpips_map.to(ctx.device)
        label = lpips_weights_label(config.lpips_net, config.lpips_weights)
        ctx.notes["inpainting_lpips"] = label if real else f"{label} (seed {config.seed})"
        factor = ctx.tokenizer.downsample_factor
        out: dict[str, float] = {}
        for kind in config.masks:
            pixel = pixel_masks(kind, images.shape[-1], len(images), seed=config.seed)
            keep = ~latent_regenerate_mask(pixel, factor, config.cell_threshold)
            result_codes = ctx.inpaint(codes, keep, labels)
            if not torch.equal(result_codes[keep], codes[keep]):
                raise AssertionError(f"{type(ctx.prior).__name__}.inpaint changed kept tokens ({kind} masks)")
            result = ctx.decode(result_codes)
            pasted = composite(images, result, pixel)
            full, spatial = lpips_pairs(lpips_full, images, pasted, ctx.device), lpips_pairs(lpips_map, images, pasted, ctx.device)
            out[f"inpaint_{kind}_lpips"] = float(full.mean())
            out[f"inpaint_{kind}_lpips_in_mask"] = float(masked_mean(spatial, pixel).nanmean())
            out[f"inpaint_{kind}_psnr"] = float(psnr_in_region(reconstruction, result, kept_token_pixels(keep, factor)).nanmean())
            features = ctx.features.of(pasted)
            out[f"inpaint_{kind}_kid"] = kid_all_pairs(ctx.features.real, features)
            if config.fid:
                out[f"inpaint_{kind}_fid"] = fid_from_features(ctx.features.real, features)
            shown = images.clone()
            shown[pixel[:, None].expand_as(shown)] = 127
            ctx.artifacts[f"inpaint_{kind}"] = (images[:4], shown[:4], pasted[:4])
        return out
