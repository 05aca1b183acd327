"""LPIPS with lpips' pretrained backbone when its torchvision weights are on disk, else a labelled random one."""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)
BACKBONE_FILES = {  # torchvision weight files lpips' backbones load from the torch hub cache
    "alex": "alexnet-owt-7be5be79.pth",
    "vgg": "vgg16-397923af.pth",
    "squeeze": "squeezenet1_1-b8a52dc0.pth",
}


def backbone_weights_available(net: str) -> bool:
    return (Path(torch.hub.get_dir()) / "checkpoints" / BACKBONE_FILES[net]).is_file()


def load_lpips(net: str = "alex", seed: int = 0, spatial: bool = False) -> tuple[torch.nn.Module, bool]:
    """(LPIPS module in eval mode without gradients, whether its backbone has real pretrained weights).

    Offline (no torchvision weights in the hub cache) the backbone is randomly initialised from ``seed``; the linear
    calibration layers shipped inside the lpips package are loaded either way.
    """
    import lpips

    if net not in BACKBONE_FILES:
        raise ValueError(f"unknown LPIPS network {net!r}; use one of {sorted(BACKBONE_FILES)}")
    real = backbone_weights_available(net)
    if not real:
        log.warning("LPIPS %s backbone weights not in %s: using a random backbone (seed %d)", net, torch.hub.get_dir(), seed)
    with torch.random.fork_rng(devices=[]), contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning, module="torchvision")  # lpips' `pretrained=` call
        torch.manual_seed(seed)
        model = lpips.LPIPS(net=net, pretrained=True, pnet_rand=not real, spatial=spatial, verbose=False)
    model.eval().requires_grad_(False)
    return MinSizeLPIPS(model, spatial=spatial), real


class MinSizeLPIPS(nn.Module):
    """LPIPS on inputs upsampled to at least ``min_size`` (AlexNet's pooling needs ~64 px); spatial maps are returned
    at the input resolution."""

    def __init__(self, model: nn.Module, min_size: int = 64, spatial: bool = False):
        super().__init__()
        self.model, self.min_size, self.spatial = model, min_size, spatial

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        size = a.shape[-2:]
        if min(size) < self.min_size:
            scale = self.min_size / min(size)
            target = (round(size[0] * scale), round(size[1] * scale))
            a = F.interpolate(a, size=target, mode="bilinear", align_corners=False)
            b = F.interpolate(b, size=target, mode="bilinear", align_corners=False)
        out = self.model(a, b)
        if self.spatial and out.shape[-2:] != size:
            out = F.interpolate(out, size=size, mode="area")
        return out
