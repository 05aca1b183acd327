"""vqbench: matched benchmarks of discrete generative priors over vector-quantized image latents."""

from __future__ import annotations

from typing import Any

from .hookspecs import hookimpl

__version__ = "0.1.0"
__all__ = ["__version__", "hookimpl", "load_tokenizer", "registries"]


def registries():
    """The plugin registries (tokenizers, priors, backbones, datasets, metrics, feature extractors)."""
    from .plugins import registries as _registries

    return _registries()


def load_tokenizer(name: str, checkpoint: str, **options: Any):
    """Load a trained tokenizer, e.g. ``load_tokenizer("vqgan", checkpoint="last.ckpt", config="model.yaml")``."""
    return registries().tokenizers.get(name, "tokenizer").load(checkpoint, **options)
