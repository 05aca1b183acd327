"""Backbones are named in a prior's config as ``backbone: {name: hourglass, dim: 256, ...}``; this builds them."""

from __future__ import annotations

from typing import Any

from .config import parse
from .errors import ConfigError
from .interfaces import Backbone


def parse_backbone(spec: dict[str, Any], key: str, default: str) -> tuple[type[Backbone], Any]:
    """(backbone class, validated config) from a spec mapping; errors name ``key`` paths."""
    from .plugins import registries

    if not isinstance(spec, dict):
        raise ConfigError(key, f"expected a mapping like {{name: {default}, dim: 256}}, got {spec!r}")
    params = dict(spec)
    name = params.pop("name", default)
    cls = registries().backbones.get(name, f"{key}.name")
    preset = params.pop("preset", None)
    if preset is not None:  # a named configuration, then the spec's own keys on top
        presets = getattr(cls, "presets", {})
        if preset not in presets:
            from .registry import did_you_mean

            raise ConfigError(
                f"{key}.preset", f"unknown {name} preset {preset!r}{did_you_mean(str(preset), list(presets))} (known: {', '.join(presets) or 'none'})"
            )
        params = {**presets[preset], **params}
    return cls, parse(cls.Config, params, key)


def build_backbone(
    spec: dict[str, Any], key: str, default: str, vocab_size: int, num_logits: int, latent_shape: tuple[int, int],
    num_classes: int = 0, causal: bool = False,
) -> Backbone:  # fmt: skip
    """Instantiate the backbone ``spec`` names, reading ``vocab_size`` input tokens and producing ``num_logits``."""
    cls, config = parse_backbone(spec, key, default)
    if causal and not cls.supports_causal:
        raise ConfigError(
            f"{key}.name", f"backbone '{spec.get('name', default)}' is bidirectional only; this prior needs a causal one (e.g. transformer)"
        )
    return cls(config, vocab_size, num_logits, latent_shape, num_classes=num_classes, causal=causal)
