"""Readers of prior checkpoints written elsewhere: vqbench's own cells, Unleashing Transformers and taming-transformers."""

from __future__ import annotations

import vqbench
from vqbench.checkpoints import VqbenchFormat

from .taming import TamingFormat
from .unleashing import UnleashingFormat


@vqbench.hookimpl
def vqbench_register_checkpoint_formats(registry):
    registry.register("vqbench", VqbenchFormat)
    registry.register("unleashing", UnleashingFormat)
    registry.register("taming", TamingFormat)
