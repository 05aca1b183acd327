"""``format: unleashing``: sampler checkpoints of Unleashing Transformers (samb-t/unleashing-transformers).

Their training script saves the sampler's ``state_dict()``: the absorbing sampler's ``Transformer`` under
``_denoise_fn.`` (its ``tok_emb`` holds the codes and, last, the mask token), the autoregressive one's under ``net.``
(codes only; the learned ``start_tok`` vector comes first in every sequence). Their hyperparameters live on the command
line; ``checkpoint.config`` may give them as YAML with their names (``bert_n_head``, ``latent_shape``, ``total_steps``,
``mask_schedule``, ``loss_type``, ``sample_steps``, ``temp``), defaulting to their FFHQ/churches/bedrooms values.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import yaml

from vqbench.checkpoints import CheckpointFormat, LoadedPrior
from vqbench.errors import ConfigError
from vqbench.io import load_torch, sha256_file

from .mingpt import backbone_spec, require, square_side, strip_prefix, to_transformer

DEFAULTS = {"bert_n_head": 8, "total_steps": 256, "mask_schedule": "random", "loss_type": "reweighted_elbo", "temp": 1.0}
NET = ["tok_emb.weight", "pos_emb", "ln_f.weight", "head.weight", "blocks.0.attn.query.weight"]


def read_hparams(config: Path | None, key: str) -> dict[str, Any]:
    """Their hyperparameters (a YAML mapping of their names) over the defaults of their released models."""
    if config is None:
        return dict(DEFAULTS)
    try:
        data = yaml.safe_load(config.read_text()) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise ConfigError(f"{key}.config", f"{config}: not a readable YAML mapping ({type(err).__name__})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{key}.config", f"{config}: expected a mapping of Unleashing hyperparameters (bert_n_head, latent_shape, ...)")
    return {**DEFAULTS, **data}


class UnleashingFormat(CheckpointFormat):
    """Absorbing-diffusion and autoregressive samplers of Unleashing Transformers."""

    @classmethod
    def read(cls, path: Path, config: Path | None, key: str) -> LoadedPrior:
        state = load_torch(path, inert_globals=True)
        state = state.get("state_dict", state) if isinstance(state, dict) else {}
        hp = read_hparams(config, key)
        if any(k.startswith("_denoise_fn.") for k in state):
            prior, net = "absorbing", strip_prefix(state, "_denoise_fn.")
        elif any(k.startswith("net.") for k in state):
            prior, net = "autoregressive", strip_prefix(state, "net.")
        else:
            raise ConfigError(f"{key}.path", f"{path} holds no `_denoise_fn.*` (absorbing) or `net.*` (autoregressive) weights; check `format`")
        require(net, NET + (["start_tok"] if prior == "autoregressive" else []), path, key, f"an Unleashing {prior} sampler")
        codebook = int(net["head.weight"].shape[0])
        vocab = int(net["tok_emb.weight"].shape[0])
        if vocab != codebook + (prior == "absorbing"):
            raise ConfigError(f"{key}.path", f"{path}: {vocab} input tokens for {codebook} codes does not match an Unleashing {prior} sampler")
        if "codebook_size" in hp and int(hp["codebook_size"]) != codebook:
            raise ConfigError(f"{key}.config", f"{config} says codebook_size {hp['codebook_size']}, the weights have {codebook} codes")
        h, w = latent_shape(hp, int(net["pos_emb"].shape[1]), path, key)
        backbone = backbone_spec(net, int(hp["bert_n_head"]), path, key, config)
        if prior == "absorbing":
            embed = net["tok_emb.weight"]  # the mask token is the last row, as vqbench's absorbing prior has it
            params: dict[str, Any] = {
                "backbone": backbone, "total_steps": int(hp["total_steps"]), "mask_schedule": hp["mask_schedule"],
                "loss": hp["loss_type"], "temperature": float(hp["temp"]),
            }  # fmt: skip
            if hp.get("sample_steps"):
                params["steps"] = int(hp["sample_steps"])
        else:
            embed = torch.cat([net["tok_emb.weight"], net["start_tok"].reshape(1, -1)])  # start token = row `codebook`
            params = {"backbone": backbone, "temperature": float(hp["temp"])}
        return LoadedPrior(
            prior=prior, config=params, state_dict=to_transformer(net, embed, h * w), latent_shape=(h, w), codebook_size=codebook,
            num_classes=0, sha256=sha256_file(path), path=str(path),
        )  # fmt: skip


def latent_shape(hp: dict[str, Any], positions: int, path: Path, key: str) -> tuple[int, int]:
    """Their ``latent_shape`` ([1, H, W] or [H, W]); without it, the square grid of their ``block_size`` positions."""
    if "latent_shape" in hp:
        shape = [int(v) for v in hp["latent_shape"]][-2:]
        if shape[0] * shape[1] > positions:
            raise ConfigError(f"{key}.config", f"latent_shape {shape} needs {shape[0] * shape[1]} positions, the weights have {positions}")
        return shape[0], shape[1]
    side = square_side(positions, path, key)
    return side, side
