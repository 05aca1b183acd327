"""minGPT's key layout (taming-transformers' GPT, Unleashing Transformers' ``Transformer``) → vqbench's ``transformer``.

Both keep ``tok_emb``, ``pos_emb``, blocks of ``ln1``/``ln2``/``attn.{query,key,value,proj}``/``mlp.{0,2}``, ``ln_f`` and a
bias-free ``head``; that is vqbench's pre-norm transformer with ``qkv_bias: true`` and ``logits_bias: false``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from vqbench.errors import ConfigError


def depth_of(weights: dict[str, torch.Tensor]) -> int:
    """Number of blocks ``blocks.<i>.*`` in a minGPT state dict."""
    found = {int(m.group(1)) for k in weights if (m := re.match(r"blocks\.(\d+)\.", k))}
    return max(found) + 1 if found else 0


def require(weights: dict[str, torch.Tensor], names: list[str], path: Path, key: str, what: str) -> None:
    """Stop unless every tensor ``names`` is present."""
    missing = [n for n in names if n not in weights]
    if missing:
        raise ConfigError(f"{key}.path", f"{path} is not {what}: missing {', '.join(missing[:4])}; check `format`")


def backbone_spec(weights: dict[str, torch.Tensor], heads: int, path: Path, key: str, config: Path | None) -> dict[str, Any]:
    """The ``transformer`` backbone spec these weights describe (``heads``, from ``config`` or a default, cannot be
    read from shapes)."""
    dim = int(weights["tok_emb.weight"].shape[1])
    if dim % heads:
        source = f"as {config} says" if config is not None else "by default"
        raise ConfigError(
            f"{key}.config", f"{path}: width {dim} is not divisible by {heads} heads ({source}); give the model's head count in its config"
        )
    hidden = int(weights["blocks.0.mlp.0.weight"].shape[0]) if "blocks.0.mlp.0.weight" in weights else 4 * dim
    return {
        "name": "transformer", "dim": dim, "depth": depth_of(weights), "heads": heads, "dim_head": dim // heads,
        "mlp_ratio": hidden / dim, "abs_pos": True, "qkv_bias": True, "logits_bias": False, "class_conditional": False,
    }  # fmt: skip


def to_transformer(weights: dict[str, torch.Tensor], embed: torch.Tensor, positions: int) -> dict[str, torch.Tensor]:
    """vqbench ``transformer`` weights (under ``net.``) from minGPT ``weights``; ``embed`` is the input embedding
    table as vqbench indexes it (codes, then the start/mask/class tokens) and ``positions`` the grid's length."""
    out = {"net.embed.weight": embed, "net.pos": weights["pos_emb"][:, :positions].clone()}
    for i in range(depth_of(weights)):
        src, dst = f"blocks.{i}.", f"net.blocks.{i}."
        for name in ("weight", "bias"):
            out[f"{dst}norm_attn.{name}"] = weights[f"{src}ln1.{name}"]
            out[f"{dst}norm_mlp.{name}"] = weights[f"{src}ln2.{name}"]
            out[f"{dst}attn.to_qkv.{name}"] = torch.cat([weights[f"{src}attn.{p}.{name}"] for p in ("query", "key", "value")])
            out[f"{dst}attn.to_out.{name}"] = weights[f"{src}attn.proj.{name}"]
            out[f"{dst}mlp.net.0.{name}"] = weights[f"{src}mlp.0.{name}"]
            out[f"{dst}mlp.net.3.{name}"] = weights[f"{src}mlp.2.{name}"]
    out["net.norm.weight"], out["net.norm.bias"] = weights["ln_f.weight"], weights["ln_f.bias"]
    out["net.to_logits.weight"] = weights["head.weight"]
    return out


def strip_prefix(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The tensors of ``state`` under ``prefix``, without it."""
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def square_side(length: int, path: Path, key: str) -> int:
    """The side of a square grid of ``length`` tokens (formats that keep only the sequence length)."""
    side = round(length**0.5)
    if side * side != length:
        raise ConfigError(f"{key}.config", f"{path}: {length} positions is not a square grid; give `latent_shape: [H, W]` in the config file")
    return side
