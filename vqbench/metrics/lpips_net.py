"""LPIPS with lpips' pretrained backbone when its torchvision weights are on disk, else a labelled random one."""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..io import sha256_file

log = logging.getLogger(__name__)
BACKBONE_FILES = {  # torchvision weight files lpips' backbones load from the torch hub cache
    "alex": "alexnet-owt-7be5be79.pth",
    "vgg": "vgg16-397923af.pth",
    "squeeze": "squeezenet1_1-b8a52dc0.pth",
}


def backbone_weights_available(net: str) -> bool:
    return (Path(torch.hub.get_dir()) / "checkpoints" / BACKBONE_FILES[net]).is_file()


def lpips_backbone_is_random(net: str, weights: str | None = None) -> bool:
    """Whether LPIPS runs on a randomly initialised backbone (no local file, nothing in torchvision's cache)."""
    return weights is None and not backbone_weights_available(net)


def lpips_weights_label(net: str, weights: str | None = None) -> str:
    """How the LPIPS backbone is initialised, as the report states it."""
    if weights:
        return f"LPIPS-{net}, backbone weights from {Path(weights).name}"
    if backbone_weights_available(net):
        return f"LPIPS-{net} (pretrained backbone)"
    return f"LPIPS-{net} with a random backbone — not comparable"


def lpips_protocol(configured: dict[str, tuple[Any, Any]]) -> str | None:
    """How the LPIPS backbone of the configured metrics is initialised, with the weights file's digest when one is
    given (None without a metric that uses LPIPS). Part of every cell's protocol: new weights recompute the cell."""
    for _, config in configured.values():
        if hasattr(config, "lpips_net"):
            weights = getattr(config, "lpips_weights", None)
            digest = f" (sha256 {sha256_file(Path(weights).expanduser())[:16]})" if weights and Path(weights).expanduser().is_file() else ""
            return lpips_weights_label(config.lpips_net, weights) + digest
    return None


def load_lpips(
    net: str = "alex", seed: int = 0, spatial: bool = False, weights: str | None = None, key: str = "lpips_weights"
) -> tuple[torch.nn.Module, bool]:
    """(LPIPS module in eval mode without gradients, whether its backbone has real weights).

    The backbone's weights come from ``weights`` (the torchvision state dict lpips itself loads, e.g.
    ``alexnet-owt-7be5be79.pth``, read with ``weights_only``) or torchvision's hub cache; offline without either it is
    randomly initialised from ``seed``. The linear calibration layers shipped inside the lpips package are loaded
    either way.
    """
    import lpips

    if net not in BACKBONE_FILES:
        raise ValueError(f"unknown LPIPS network {net!r}; use one of {sorted(BACKBONE_FILES)}")
    real = weights is not None or backbone_weights_available(net)
    if not real:
        log.warning("LPIPS %s backbone weights not in %s: using a random backbone (seed %d)", net, torch.hub.get_dir(), seed)
    with torch.random.fork_rng(devices=[]), contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning, module="torchvision")  # lpips' `pretrained=` call
        torch.manual_seed(seed)
        model = lpips.LPIPS(net=net, pretrained=True, pnet_rand=weights is not None or not real, spatial=spatial, verbose=False)
    if weights is not None:
        load_backbone(model.net, weights, key)
    model.eval().requires_grad_(False)
    return MinSizeLPIPS(model, spatial=spatial), real


def load_backbone(backbone: nn.Module, path: str, key: str) -> None:
    """Copy a torchvision state dict (``features.<i>.weight`` …) into lpips' sliced backbone (``slice<k>.<i>.weight``)."""
    from ..errors import ConfigError

    file = Path(path).expanduser()
    if not file.is_file():
        raise ConfigError(
            key, f"LPIPS backbone weights {str(file)!r} not found; give the torchvision file lpips uses (e.g. {BACKBONE_FILES['alex']})"
        )
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated, empty or not a tensor file
        raise ConfigError(key, f"{str(file)!r} is not a readable weights file ({type(err).__name__}: {err})") from None
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    if not isinstance(state, dict):
        raise ConfigError(key, f"{str(file)!r} holds no state dict")
    wanted = {name: "features." + name.split(".", 1)[1] for name in backbone.state_dict()}
    missing = [source for source in wanted.values() if source not in state]
    if missing:
        raise ConfigError(key, f"{str(file)!r} lacks {missing[:3]}{' …' if len(missing) > 3 else ''}: not this backbone's torchvision weights")
    mapped = {name: state[source] for name, source in wanted.items()}
    shapes = {name: (tuple(t.shape), tuple(mapped[name].shape)) for name, t in backbone.state_dict().items() if t.shape != mapped[name].shape}
    if shapes:
        raise ConfigError(key, f"{str(file)!r} does not fit the backbone (shape mismatch at {next(iter(shapes.items()))})")
    backbone.load_state_dict(mapped)


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
