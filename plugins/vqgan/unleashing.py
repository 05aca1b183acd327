"""The VQ-GAN of Unleashing Transformers (samb-t/unleashing-transformers), loaded from its ``vqgan_{step}.th`` files.

Their autoencoder is taming's with three differences, so it is its own module here rather than a key mapping onto
``model.py``: no swish between the last GroupNorm and the output convolution (encoder and generator), ``res_blocks``
(not ``res_blocks + 1``) residual blocks per generator level, and images in [0, 1] (``ToTensor``) with an unbounded
generator output. Every residual block holds a 1×1 ``conv_out`` shortcut, used only where the width changes.

Module names follow theirs (``encoder.blocks.{i}``, ``quantize.embedding.weight``, ``generator.blocks.{i}``), so their
files load after the ``ae.`` prefix is removed; ``disc.*``, ``perceptual.*`` and ``generator.logsigma.*`` are ignored.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import yaml
from torch import nn

from vqbench.config import parse, to_dict
from vqbench.errors import DataError
from vqbench.interfaces import Tokenizer
from vqbench.io import load_torch

from .model import AttnBlock, Downsample, Upsample, swish
from .quantizer import VectorQuantizer

log = logging.getLogger(__name__)

IGNORED_PREFIXES = ("disc.", "perceptual.", "generator.logsigma.")  # discriminator, LPIPS, the ELBO head


@dataclass
class UnleashingConfig:
    """Their hparam names. Defaults: their FFHQ (also churches, bedrooms) VQ-GAN, ``hparams/defaults/vqgan_defaults.py``.

    ``codebook_size``, ``emb_dim``, ``nf`` and ``n_channels`` are read from the weights when the config omits them."""

    nf: int = 128
    ch_mult: list[int] = field(default_factory=lambda: [1, 1, 2, 2, 4])
    res_blocks: int = 2
    attn_resolutions: list[int] = field(default_factory=lambda: [16])
    emb_dim: int = 256
    codebook_size: int = 1024
    img_size: int = 256
    n_channels: int = 3
    quantizer: Literal["nearest"] = "nearest"  # their "gumbel" quantizer is not supported


def group_norm(channels: int) -> nn.GroupNorm:
    """Their ``normalize``: always 32 groups, eps 1e-6."""
    return nn.GroupNorm(num_groups=32, num_channels=channels, eps=1e-6, affine=True)


class ResBlock(nn.Module):
    """(GroupNorm → swish → 3×3 conv) twice, plus the input (through ``conv_out`` where the width changes)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.changes_width = in_channels != out_channels
        self.norm1 = group_norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = group_norm(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.conv_out = nn.Conv2d(in_channels, out_channels, 1)  # present in every block of their files

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv2(swish(self.norm2(self.conv1(swish(self.norm1(x))))))
        return h + (self.conv_out(x) if self.changes_width else x)


def _middle(channels: int) -> list[nn.Module]:
    return [ResBlock(channels, channels), AttnBlock(channels), ResBlock(channels, channels)]


class Encoder(nn.Module):
    """conv → per level: res blocks (attention where the side is in ``attn_resolutions``), downsample → middle → norm → conv."""

    def __init__(self, cfg: UnleashingConfig):
        super().__init__()
        blocks: list[nn.Module] = [nn.Conv2d(cfg.n_channels, cfg.nf, 3, padding=1)]
        channels, side = cfg.nf, cfg.img_size
        for level, mult in enumerate(cfg.ch_mult):
            for _ in range(cfg.res_blocks):
                blocks.append(ResBlock(channels, cfg.nf * mult))
                channels = cfg.nf * mult
                if side in cfg.attn_resolutions:
                    blocks.append(AttnBlock(channels))
            if level != len(cfg.ch_mult) - 1:
                blocks.append(Downsample(channels))
                side //= 2
        blocks += [*_middle(channels), group_norm(channels), nn.Conv2d(channels, cfg.emb_dim, 3, padding=1)]
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)


class Generator(nn.Module):
    """conv → middle → per level, coarsest first: ``res_blocks`` res blocks (attention as above), upsample → norm → conv."""

    def __init__(self, cfg: UnleashingConfig):
        super().__init__()
        channels = cfg.nf * cfg.ch_mult[-1]
        side = cfg.img_size // 2 ** (len(cfg.ch_mult) - 1)
        blocks: list[nn.Module] = [nn.Conv2d(cfg.emb_dim, channels, 3, padding=1), *_middle(channels)]
        for level in reversed(range(len(cfg.ch_mult))):
            for _ in range(cfg.res_blocks):
                blocks.append(ResBlock(channels, cfg.nf * cfg.ch_mult[level]))
                channels = cfg.nf * cfg.ch_mult[level]
                if side in cfg.attn_resolutions:
                    blocks.append(AttnBlock(channels))
            if level != 0:
                blocks.append(Upsample(channels))
                side *= 2
        blocks += [group_norm(channels), nn.Conv2d(channels, cfg.n_channels, 3, padding=1)]
        self.blocks = nn.Sequential(*blocks)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.blocks(z)


class UnleashingVQGAN(Tokenizer):
    """vqbench images in [-1, 1] ↔ their [0, 1]: encode maps x → (x + 1) / 2, decode maps y → 2y − 1, clamped."""

    Config = UnleashingConfig

    def __init__(self, config: UnleashingConfig):
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.quantize = VectorQuantizer(config.codebook_size, config.emb_dim)
        self.generator = Generator(config)
        self.codebook_size = config.codebook_size
        self.downsample_factor = 2 ** (len(config.ch_mult) - 1)
        self.trained_resolution = config.img_size

    def config_dict(self) -> dict[str, Any]:
        return {"format": "unleashing", **to_dict(self.config)}

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.quantize.codes(self.encoder((images + 1.0) / 2.0))

    def decode_latents(self, z_q: torch.Tensor) -> torch.Tensor:
        """Codebook vectors → images in vqbench's scale, unclamped."""
        return self.generator(z_q) * 2.0 - 1.0

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        return self.decode_latents(self.quantize.lookup(codes)).clamp(-1.0, 1.0)

    @classmethod
    def load(cls, path: str | Path, config: str | Path | None = None, **options: Any) -> UnleashingVQGAN:
        """Load ``vqgan_{step}.th`` (or ``vqgan_ema_{step}.th``) with its hparams (``config``: YAML/JSON, optional)."""
        return load_unleashing(path, load_torch(path, inert_globals=True), config)


def looks_like_unleashing(state: Any) -> bool:
    """A flat state dict with their key layout (``ae.encoder.blocks.0.weight`` or ``encoder.blocks.0.weight``)."""
    return isinstance(state, dict) and any(isinstance(k, str) and k.removeprefix("ae.").startswith("encoder.blocks.") for k in state)


def load_unleashing(path: str | Path, state: Any, config: str | Path | None = None) -> UnleashingVQGAN:
    """Build the model from ``config`` (their hparams; shapes fill in what it omits) and load ``state`` strictly."""
    if isinstance(state, dict) and isinstance(state.get("config"), dict) and isinstance(state.get("state_dict"), dict):
        hparams = {k: v for k, v in state["config"].items() if k != "format"}  # a vqbench file of this model
        model = UnleashingVQGAN(parse(UnleashingConfig, hparams, f"{path}:config"))
        _load_weights(model, _strip(path, state["state_dict"]), path, "the config saved with it")
        return model.eval()
    weights = _strip(path, state)
    hparams = _read_hparams(config) if config is not None else {}
    known = {f.name for f in dataclasses.fields(UnleashingConfig)}
    ignored = sorted(set(hparams) - known - {"latent_shape"})
    if ignored:
        log.info("%s: hparams not used by the autoencoder: %s", config, ", ".join(map(str, ignored)))
    where = str(config) if config is not None else "the default (FFHQ) hparams"
    cfg = parse(
        UnleashingConfig,
        {**{k: v for k, v in hparams.items() if k in known}, **_inferred(path, weights, hparams, where)},
        f"{config}:hparams" if config else "hparams",
    )
    _check_config(path, cfg, hparams.get("latent_shape"), where)
    model = UnleashingVQGAN(cfg)
    _load_weights(model, weights, path, where)
    return model.eval()


def _strip(path: str | Path, state: Any) -> dict[str, torch.Tensor]:
    """The autoencoder's weights: the ``ae.`` prefix removed, discriminator/LPIPS/ELBO-head keys dropped."""
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise DataError(f"{path}: expected a state dict of tensors (unleashing-transformers' vqgan_{{step}}.th)")
    if any(k.startswith("ae.") for k in state):
        state = {k[3:]: v for k, v in state.items() if k.startswith("ae.")}
    if "quantize.proj.weight" in state or "quantize.embed.weight" in state:
        raise DataError(f"{path}: a Gumbel-quantizer VQ-GAN (quantizer: gumbel) is not supported; only quantizer: nearest")
    return {k: v for k, v in state.items() if not k.startswith(IGNORED_PREFIXES)}


def _read_hparams(config: str | Path) -> dict[str, Any]:
    path = Path(config)
    if not path.is_file():
        raise DataError(f"{path}: unleashing hparams file not found")
    try:
        data = yaml.safe_load(path.read_text())  # JSON is YAML too
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: not a readable YAML/JSON file ({type(err).__name__}: {' '.join(str(err).split())[:200]})") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a mapping of unleashing-transformers hparams (nf, ch_mult, res_blocks, …)")
    return data


def _inferred(path: str | Path, weights: dict[str, torch.Tensor], hparams: dict[str, Any], where: str) -> dict[str, int]:
    """codebook_size, emb_dim (codebook) and nf, n_channels (first conv) from the weights; a given value must agree."""
    sources = {"quantize.embedding.weight": ("codebook_size", "emb_dim"), "encoder.blocks.0.weight": ("nf", "n_channels")}
    found: dict[str, int] = {}
    for name, keys in sources.items():
        tensor = weights.get(name)
        if tensor is None or tensor.dim() < 2:
            raise DataError(f"{path}: no ae.{name} matrix: not an unleashing-transformers VQ-GAN state dict")
        for key, size in zip(keys, tensor.shape[:2]):
            if key in hparams and hparams[key] != int(size):
                raise DataError(f"{path}: {key}={hparams[key]} in {where}, but the file's {name} has shape {list(tensor.shape)} ({key}={int(size)})")
            found[key] = int(size)
    return found


def _check_config(path: str | Path, cfg: UnleashingConfig, latent_shape: Any, where: str) -> None:
    """Constraints their code imposes (GroupNorm of 32 groups, whole downsampling), and ``latent_shape`` if given."""
    if not cfg.ch_mult or any(cfg.nf * m % 32 for m in cfg.ch_mult):
        raise DataError(
            f"{path}: nf={cfg.nf}, ch_mult={cfg.ch_mult} from {where}: every width nf×ch_mult must be a multiple of 32 (GroupNorm of 32 groups)"
        )
    factor = 2 ** (len(cfg.ch_mult) - 1)
    if cfg.img_size % factor:
        raise DataError(f"{path}: img_size={cfg.img_size} from {where} is not a multiple of the downsampling factor {factor}")
    side = cfg.img_size // factor
    if latent_shape is not None and list(latent_shape)[-2:] != [side, side]:
        raise DataError(f"{path}: latent_shape={latent_shape} in {where}, but img_size={cfg.img_size} and ch_mult={cfg.ch_mult} give {side}×{side}")


def _load_weights(model: UnleashingVQGAN, weights: dict[str, torch.Tensor], path: str | Path, where: str) -> None:
    """Strict load; a mismatch names the first differing keys and the block counts."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in weights]
    unexpected = [k for k in weights if k not in expected]
    shapes = [f"{k} {list(weights[k].shape)} vs {list(v.shape)}" for k, v in expected.items() if k in weights and weights[k].shape != v.shape]
    if missing or unexpected or shapes:

        def blocks(part: str, keys: Any) -> int:
            return len({k.split(".")[2] for k in keys if k.startswith(f"{part}.blocks.")})

        counts = "; ".join(f"{part} blocks: file {blocks(part, weights)}, config {blocks(part, expected)}" for part in ("encoder", "generator"))
        detail = "; ".join(
            f"{label}: {', '.join(items[:3])}{'…' if len(items) > 3 else ''}"
            for label, items in (("missing", missing), ("unexpected", unexpected), ("shape file vs config", shapes))
            if items
        )
        raise DataError(
            f"{path}: weights do not match the unleashing VQ-GAN built from {where} ({detail}; {counts}); "
            "check nf, ch_mult, res_blocks, attn_resolutions and img_size"
        )
    model.load_state_dict(weights, strict=True)
