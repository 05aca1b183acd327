"""Weight initialisation shared by every backbone (taming-transformers' GPT / minGPT)."""

from __future__ import annotations

from torch import nn


def init_weights(module: nn.Module) -> None:
    """Linear and Embedding weights N(0, 0.02), biases 0, LayerNorm weight 1 / bias 0 (use with ``Module.apply``).

    PyTorch's default Embedding init is N(0, 1): next to learned positions at N(0, 0.02) the position signal would be
    ~2 % of the input and a bidirectional network position-blind for thousands of steps."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        if module.weight is not None:
            nn.init.ones_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
