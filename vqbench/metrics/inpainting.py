"""Inpainting quality over a mask suite: LPIPS in the masked region, PSNR of the kept region, FID of the results."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import torch

from ..interfaces import Column, Metric, uint8_to_float
from .fid import fid_from_features
from .lpips_net import load_lpips
from .masks import MASK_KINDS, latent_regenerate_mask, pixel_masks

MaskKind = Literal["center", "upper_half", "lower_half", "strokes"]


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-image mean of ``values`` (B×H×W) over ``mask`` (B×H×W); NaN where the mask is empty."""
    mask = mask.to(values.dtype)
    return (values * mask).sum(dim=(1, 2)) / mask.sum(dim=(1, 2))


def psnr_in_region(a: torch.Tensor, b: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """PSNR (dB) per image between uint8 images a, b (B×3×H×W) over ``region`` (B×H×W)."""
    se = (a.double() - b.double()).pow(2).mean(dim=1)
    mse = masked_mean(se, region)
    return 10.0 * torch.log10(255.0**2 / mse.clamp_min(1e-10))


@dataclass
class InpaintingConfig:
    masks: list[MaskKind] = field(default_factory=lambda: list(MASK_KINDS))
    num_images: int = 64
    cell_threshold: float = 0.0  # regenerate a token when more than this fraction of its cell is masked
    lpips_net: Literal["alex", "vgg", "squeeze"] = "alex"
    fid: bool = True


class InpaintingMetric(Metric):
    """Mask suite (centre, halves, strokes): LPIPS in the mask, PSNR of the kept region, FID of the results."""

    Config = InpaintingConfig
    needs_images = True
    group = "inpainting"

    def columns(self, config: InpaintingConfig) -> dict[str, Column]:
        cols = {}
        for kind in config.masks:
            cols[f"inpaint_{kind}_lpips"] = Column("lower", f"{kind} LPIPS", 4)
            cols[f"inpaint_{kind}_psnr"] = Column("higher", f"{kind} kept PSNR", 2)
            if config.fid:
                cols[f"inpaint_{kind}_fid"] = Column("lower", f"{kind} FID", 2)
        return cols

    @torch.inference_mode()
    def compute(self, ctx, config: InpaintingConfig) -> dict[str, float]:
        if not ctx.prior.supports_inpainting:
            return {name: math.nan for name in self.columns(config)}
        images, codes = ctx.inpainting_inputs(config.num_images)
        lpips_model, real = load_lpips(config.lpips_net, seed=ctx.seed, spatial=True)
        lpips_model.to(ctx.device)
        ctx.notes["inpainting_lpips"] = f"LPIPS-{config.lpips_net} ({'pretrained' if real else 'random backbone'})"
        out: dict[str, float] = {}
        for kind in config.masks:
            pixel = pixel_masks(kind, images.shape[-1], len(images), seed=ctx.seed)
            keep = ~latent_regenerate_mask(pixel, ctx.tokenizer.downsample_factor, config.cell_threshold)
            result_codes = ctx.inpaint(codes, keep)
            if not torch.equal(result_codes[keep], codes[keep]):
                raise AssertionError(f"{type(ctx.prior).__name__}.inpaint changed kept tokens ({kind} masks)")
            result = ctx.decode(result_codes)
            lp = torch.cat([
                lpips_model(uint8_to_float(a).to(ctx.device), uint8_to_float(b).to(ctx.device)).cpu()
                for a, b in zip(images.split(32), result.split(32))
            ])[:, 0]  # fmt: skip
            out[f"inpaint_{kind}_lpips"] = float(masked_mean(lp.double(), pixel).nanmean())
            out[f"inpaint_{kind}_psnr"] = float(psnr_in_region(images, result, ~pixel).nanmean())
            if config.fid:
                out[f"inpaint_{kind}_fid"] = fid_from_features(ctx.features.real, ctx.features.of(result))
            shown = images.clone()
            shown[pixel[:, None].expand_as(shown)] = 127
            ctx.artifacts[f"inpaint_{kind}"] = (images[:4], shown[:4], result[:4])
        return out


class SampleTimeMetric(Metric):
    """Latent sampling and decoding time per image (warm-up excluded, synchronised), NFE and peak memory."""

    group = "speed"

    def columns(self, config) -> dict[str, Column]:
        return {
            "sample_s_per_img": Column("lower", "sample s/img", 4),
            "decode_s_per_img": Column("lower", "decode s/img", 4),
            "total_s_per_img": Column("lower", "total s/img", 4),
            "nfe": Column("lower", "NFE", 1),
            "peak_mem_mb": Column("lower", "peak MiB", 1),
        }

    def compute(self, ctx, config) -> dict[str, float]:
        return {name: float(ctx.timing.get(name, math.nan)) for name in self.columns(config)}
