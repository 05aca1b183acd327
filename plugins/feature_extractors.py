"""Feature extractors for FID/KID/PRDC: torch-fidelity's Inception-v3 (real weights or a labelled random init) and a
small random CNN for fast smoke runs."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.nn.functional as F
import torch_fidelity.feature_extractor_inceptionv3 as fidelity_inception
from torch import nn

import vqbench
from vqbench.errors import ConfigError
from vqbench.interfaces import FeatureExtractor
from vqbench.io import load_torch

log = logging.getLogger(__name__)
INCEPTION_FILE = Path(fidelity_inception.URL_INCEPTION_V3).name  # weights-inception-2015-12-05-6726825d.pth
_RANDOM = object()


def inception_cache_path() -> Path:
    """Where torch-fidelity's own download lands (the torch hub cache)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILE


class _SafeInception(fidelity_inception.FeatureExtractorInceptionV3):
    """torch-fidelity's Inception with weights loaded by vqbench (weights_only) or kept random."""

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):  # noqa: D102
        if state_dict is _RANDOM:
            return None
        return super().load_state_dict(state_dict, strict=strict, assign=assign)


@contextlib.contextmanager
def _state_dict_source(state: object) -> Iterator[None]:
    original = fidelity_inception.load_state_dict_from_url
    fidelity_inception.load_state_dict_from_url = lambda *args, **kwargs: state
    try:
        yield
    finally:
        fidelity_inception.load_state_dict_from_url = original


class InceptionV3Compat(FeatureExtractor):
    """2048-d pool features of the TF-compatible Inception-v3 used for published FIDs."""

    dims = 2048

    def __init__(self, weights: str | None = None, allow_random: bool = False, seed: int = 0, key: str = "metrics"):
        super().__init__()
        path = Path(weights).expanduser() if weights else inception_cache_path()
        if weights and not path.is_file():
            raise ConfigError(f"{key}.feature_weights", f"Inception weights file {str(path)!r} not found")
        if path.is_file():
            state, self.real_weights = load_torch(path), True
            self.description = f"inception-v3-compat ({path.name})"
        elif allow_random:
            state, self.real_weights = _RANDOM, False
            self.description = f"inception-v3-compat, RANDOM weights (seed {seed}): not comparable to published FIDs"
            log.warning("Inception weights not found at %s: using a randomly initialised network", path)
        else:
            raise ConfigError(
                f"{key}.feature_weights",
                f"Inception weights not found at {str(path)!r}; copy {INCEPTION_FILE} there, set "
                f"metrics.feature_weights=PATH, or set metrics.allow_random_features=true for a labelled offline run",
            )
        with torch.random.fork_rng(devices=[]), _state_dict_source(state):
            torch.manual_seed(seed)
            self.net = _SafeInception("inception-v3-compat", ["2048"])
            if state is _RANDOM:
                for module in self.net.modules():  # scale-preserving init so deep features neither vanish nor explode
                    if isinstance(module, nn.Conv2d):
                        nn.init.kaiming_normal_(module.weight, nonlinearity="relu")

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)[0]


class RandomCNN(FeatureExtractor):
    """A seeded random 4-layer CNN on 64×64 inputs (fast; for smoke runs and tests only)."""

    dims = 256
    real_weights = False

    def __init__(self, weights: str | None = None, allow_random: bool = True, seed: int = 0, key: str = "metrics"):
        super().__init__()
        if weights:
            raise ConfigError(f"{key}.feature_weights", "random-cnn has no weights to load; remove feature_weights")
        self.description = f"random-cnn (seed {seed}): random features, not comparable to published FIDs"
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            chans = [3, 32, 64, 128, 256]
            layers: list[nn.Module] = []
            for c_in, c_out in zip(chans, chans[1:]):
                conv = nn.Conv2d(c_in, c_out, 3, stride=2, padding=1)
                nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
                layers += [conv, nn.ReLU()]
            self.net = nn.Sequential(*layers)
        self.requires_grad_(False).eval()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(images.float() / 127.5 - 1.0, size=(64, 64), mode="bilinear", align_corners=False, antialias=True)
        return self.net(x).mean(dim=(2, 3))


@vqbench.hookimpl
def vqbench_register_feature_extractors(registry):
    registry.register("inception-v3-compat", InceptionV3Compat)
    registry.register("random-cnn", RandomCNN)
