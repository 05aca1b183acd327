"""``format: taming``: ``Net2NetTransformer`` checkpoints of taming-transformers (CompVis/taming-transformers).

One Lightning file holds the minGPT under ``transformer.`` and the VQ-GAN under ``first_stage_model.``; the YAML
beside it (``checkpoint.config``) gives the GPT's ``n_head`` and the latent grid. Their ``forward`` feeds
``[c, z_0 … z_{N−2}]`` and reads the logits from ``c``'s position on: unconditional models prepend the ``sos_token``
(a code index, sharing the code's embedding), class-conditional ones (``Labelator``) the class index, also looked up in
the code embedding. Both map exactly onto vqbench's ``autoregressive`` prior (start token, or ``class_token: true``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import yaml

from vqbench.checkpoints import CheckpointFormat, LoadedPrior
from vqbench.errors import ConfigError
from vqbench.io import load_torch, sha256_file

from .mingpt import backbone_spec, require, strip_prefix, to_transformer

NET = ["tok_emb.weight", "pos_emb", "ln_f.weight", "head.weight", "blocks.0.attn.query.weight"]


def _get(data: Any, dotted: str, config: Path, key: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(data, dict) or part not in data:
            raise ConfigError(f"{key}.config", f"{config}: missing {dotted} (expected a taming Net2NetTransformer YAML)")
        data = data[part]
    return data


def _target(section: Any) -> str:
    return str(section.get("target", "")) if isinstance(section, dict) else str(section)


class TamingFormat(CheckpointFormat):
    """Unconditional and class-conditional ``Net2NetTransformer`` GPTs."""

    needs_config = True

    @classmethod
    def read(cls, path: Path, config: Path | None, key: str) -> LoadedPrior:
        assert config is not None
        try:
            yml = yaml.safe_load(config.read_text()) or {}
        except (yaml.YAMLError, UnicodeDecodeError) as err:
            raise ConfigError(f"{key}.config", f"{config}: not a readable YAML file ({type(err).__name__})") from None
        params = _get(yml, "model.params", config, key)
        gpt = _get(params, "transformer_config.params", config, key)
        ddconfig = _get(params, "first_stage_config.params.ddconfig", config, key)
        codebook = int(_get(params, "first_stage_config.params.n_embed", config, key))
        permuter = _target(params.get("permuter_config", "Identity"))
        if not permuter.endswith("Identity"):
            raise ConfigError(f"{key}.config", f"{config}: permuter {permuter!r} is not supported (only the identity raster order)")
        if int(gpt.get("n_unmasked", 0)):
            raise ConfigError(f"{key}.config", f"{config}: n_unmasked {gpt['n_unmasked']} (a bidirectional prefix) is not supported")
        cond = params.get("cond_stage_config", "__is_unconditional__")
        if params.get("unconditional") or cond == "__is_unconditional__":
            num_classes = 0
        elif _target(cond).endswith("Labelator"):
            num_classes = int(_get(cond, "params.n_classes", config, key))
        else:
            raise ConfigError(f"{key}.config", f"{config}: conditioning {_target(cond)!r} is not supported (unconditional or class labels only)")

        state = load_torch(path, inert_globals=True)
        net = strip_prefix(state.get("state_dict", state) if isinstance(state, dict) else {}, "transformer.")
        require(net, NET, path, key, "a taming Net2NetTransformer checkpoint")
        vocab = int(net["tok_emb.weight"].shape[0])
        if int(net["head.weight"].shape[0]) != codebook or vocab != codebook:
            raise ConfigError(
                f"{key}.path", f"{path}: a GPT over {vocab} tokens for a VQ-GAN of {codebook} codes; only GPTs whose vocabulary is the codebook load"
            )
        side = int(ddconfig["resolution"]) // 2 ** (len(ddconfig["ch_mult"]) - 1)
        if side * side > int(net["pos_emb"].shape[1]):
            raise ConfigError(f"{key}.config", f"{config}: a {side}×{side} grid needs {side * side} positions, the GPT has {net['pos_emb'].shape[1]}")
        codes = net["tok_emb.weight"]
        if num_classes:
            embed = torch.cat([codes, codes[:num_classes]])  # class c is fed as token c, sharing the code's embedding
        else:
            sos = int(params.get("sos_token", 0))
            embed = torch.cat([codes, codes[sos : sos + 1]])
        spec = backbone_spec(net, int(gpt.get("n_head", 8)), path, key, config)
        return LoadedPrior(
            prior="autoregressive", config={"backbone": spec, "class_token": bool(num_classes)},
            state_dict=to_transformer(net, embed, side * side), latent_shape=(side, side), codebook_size=codebook,
            num_classes=num_classes, sha256=sha256_file(path), path=str(path),
        )  # fmt: skip
