"""The ``vqgan`` tokenizer: taming-compatible model, presets, loading and registration."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

import vqbench
from vqbench.config import parse, to_dict
from vqbench.errors import ConfigError, DataError
from vqbench.interfaces import Tokenizer, TrainableTokenizer
from vqbench.io import load_torch
from vqbench.registry import did_you_mean

from .model import DDConfig, Decoder, Encoder
from .quantizer import VectorQuantizer
from .train import VQGANTrainConfig, train_vqgan
from .unleashing import load_unleashing, looks_like_unleashing

FORMATS = ("vqbench", "taming", "unleashing")  # tokenizer.format


@dataclass
class VQGANConfig:
    """Architecture (taming's ``model.params``)."""

    embed_dim: int = 256
    n_embed: int = 1024
    beta: float = 0.25
    ddconfig: DDConfig = field(default_factory=DDConfig)


PRESETS: dict[str, dict[str, Any]] = {
    # A few-minute CPU tokenizer for demos and tests: f=4, 128 codes.
    "tiny": {
        "embed_dim": 32,
        "n_embed": 128,
        "ddconfig": {"z_channels": 32, "resolution": 32, "ch": 32, "ch_mult": [1, 2, 2], "num_res_blocks": 1, "attn_resolutions": []},
    },
    # taming-transformers FFHQ / FacesHQ: f=16, 1024 codes → 16×16 latents at 256².
    "ffhq-f16": {
        "embed_dim": 256,
        "n_embed": 1024,
        "ddconfig": {"z_channels": 256, "resolution": 256, "ch": 128, "ch_mult": [1, 1, 2, 2, 4], "num_res_blocks": 2, "attn_resolutions": [16]},
    },
    # Megapixel SUNDAE: f=32, 8192 codes → 32×32 latents at 1024².
    "megapixel-f32": {
        "embed_dim": 256,
        "n_embed": 8192,
        "ddconfig": {"z_channels": 256, "resolution": 1024, "ch": 128, "ch_mult": [1, 1, 2, 2, 4, 4], "num_res_blocks": 1, "attn_resolutions": [64]},
    },
}
PRESET_TRAINING = {"megapixel-f32": {"disc_start": 15000, "disc_weight": 0.5, "lpips_net": "vgg"}, "ffhq-f16": {"lpips_net": "vgg"}}


class VQGAN(TrainableTokenizer):
    """Encoder → quant_conv → quantize → post_quant_conv → decoder, with taming's parameter names."""

    Config = VQGANConfig
    TrainConfig = VQGANTrainConfig
    presets = PRESETS
    preset_training = PRESET_TRAINING

    def __init__(self, config: VQGANConfig):
        super().__init__()
        self.config = config
        dd = config.ddconfig
        self.encoder = Encoder(dd)
        self.decoder = Decoder(dd)
        self.quantize = VectorQuantizer(config.n_embed, config.embed_dim, config.beta)
        self.quant_conv = torch.nn.Conv2d(dd.z_channels * (2 if dd.double_z else 1), config.embed_dim, 1)
        self.post_quant_conv = torch.nn.Conv2d(config.embed_dim, dd.z_channels, 1)
        self.codebook_size = config.n_embed
        self.downsample_factor = 2 ** (len(dd.ch_mult) - 1)

    @classmethod
    def from_preset(cls, preset: str, overrides: dict[str, Any] | None = None, key: str = "tokenizer") -> VQGAN:
        if preset not in PRESETS:
            raise ConfigError(f"{key}.preset", f"unknown vqgan preset {preset!r}{did_you_mean(preset, list(PRESETS))} (known: {', '.join(PRESETS)})")
        merged = _merge(PRESETS[preset], overrides or {})
        return cls(parse(VQGANConfig, merged, f"{key}.params"))

    def config_dict(self) -> dict[str, Any]:
        return to_dict(self.config)

    def pre_quant(self, images: torch.Tensor) -> torch.Tensor:
        return self.quant_conv(self.encoder(images))

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.quantize.codes(self.pre_quant(images))

    def decode_latents(self, z_q: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.post_quant_conv(z_q))

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        return self.decode_latents(self.quantize.lookup(codes)).clamp(-1.0, 1.0)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Training pass: (reconstruction, quantizer loss, codes)."""
        z_q, q_loss, codes = self.quantize(self.pre_quant(images))
        return self.decode_latents(z_q), q_loss, codes

    @classmethod
    def load(cls, path: str | Path, config: str | Path | None = None, format: str | None = None, **options: Any) -> Tokenizer:
        """Load a vqbench tokenizer file, a taming ``last.ckpt`` (VQModel or Net2NetTransformer) with its taming YAML, or an
        Unleashing Transformers ``vqgan_{step}.th`` with its hparams (``config``, optional). ``format`` (vqbench, taming,
        unleashing) is detected from the file when not given."""
        if format is not None and format not in FORMATS:
            raise ConfigError(
                "format", f"unknown tokenizer checkpoint format {format!r}{did_you_mean(str(format), list(FORMATS))} (known: {', '.join(FORMATS)})"
            )
        state = load_torch(path, inert_globals=True)  # Lightning files name their callbacks
        saved = isinstance(state, dict) and isinstance(state.get("config"), dict) and "state_dict" in state
        if format is None:
            format = "vqbench" if saved and config is None else "unleashing" if looks_like_unleashing(state) else "taming"
        if format == "unleashing" or (format == "vqbench" and saved and state["config"].get("format") == "unleashing"):
            return load_unleashing(path, state, config)
        if format == "vqbench":
            if not saved:
                raise DataError(f"{path}: not a vqbench tokenizer file (no config and state_dict); set the format (taming or unleashing)")
            model = cls(parse(VQGANConfig, state["config"], f"{path}:config"))
            weights = state["state_dict"]
            resolution = state.get("trained_resolution")
        else:
            if config is None:
                raise DataError(f"{path}: a taming checkpoint needs its YAML config too (pass config=PATH / --config PATH)")
            model = cls(taming_yaml_config(config))
            weights = state.get("state_dict", state) if isinstance(state, dict) else state
            resolution = model.config.ddconfig.resolution  # taming's ddconfig.resolution is its training resolution
        model.load_taming_state_dict(weights, source=str(path))
        model.trained_resolution = int(resolution) if resolution else None
        return model.eval()

    def load_taming_state_dict(self, weights: dict[str, torch.Tensor], source: str = "state dict") -> None:
        """Strict load of a taming-layout state dict; ``loss.*`` keys and a ``first_stage_model.`` prefix are accepted."""
        prefix = "first_stage_model."
        if any(k.startswith(prefix) for k in weights):
            weights = {k[len(prefix) :]: v for k, v in weights.items() if k.startswith(prefix)}
        weights = {k: v for k, v in weights.items() if not k.startswith("loss.") and k != "quantize.used"}
        try:
            missing, unexpected = self.load_state_dict(weights, strict=False)
        except RuntimeError as err:  # shape mismatches
            missing, unexpected = [str(err).split("\n")[1].strip()], []
        if missing or unexpected:
            raise DataError(
                f"{source}: state dict does not match the VQ-GAN architecture "
                f"(missing: {', '.join(missing[:5]) or 'none'}{'…' if len(missing) > 5 else ''}; "
                f"unexpected: {', '.join(unexpected[:5]) or 'none'}{'…' if len(unexpected) > 5 else ''}); "
                "check that the YAML config belongs to this checkpoint"
            )

    @classmethod
    def fit(cls, model: VQGAN, source: Any, indices: Any, train_config: VQGANTrainConfig, **kwargs: Any) -> dict[str, Any]:  # type: ignore[override]
        """Train ``model`` on images ``source[indices]`` (see ``train.train_vqgan``)."""
        return train_vqgan(model, source, indices, train_config, **kwargs)


def taming_yaml_config(path: str | Path) -> VQGANConfig:
    """A taming YAML → VQGANConfig: ``model.params.{embed_dim, n_embed, ddconfig}`` of a VQModel, or the same under
    ``model.params.first_stage_config.params`` of a Net2NetTransformer (its first stage)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: taming YAML config not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise DataError(
            f"{path}: not a readable YAML file ({type(err).__name__}: {' '.join(str(err).split())[:200]}); give the taming config of this checkpoint"
        ) from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a mapping with model.params (a taming-transformers VQGAN config)")
    model = data.get("model")
    params = model.get("params") if isinstance(model, dict) else None
    where = "model.params"
    if isinstance(params, dict) and "ddconfig" not in params and isinstance(params.get("first_stage_config"), dict):
        params, where = params["first_stage_config"].get("params"), "model.params.first_stage_config.params"  # Net2NetTransformer
    if not isinstance(params, dict) or not isinstance(params.get("ddconfig"), dict):
        raise DataError(
            f"{path}: expected {where}.{{embed_dim, n_embed, ddconfig}} (a taming-transformers VQGAN config, or a Net2NetTransformer "
            "config with model.params.first_stage_config)"
        )
    dd_fields = {f.name for f in dataclasses.fields(DDConfig)}
    ddconfig = {k: v for k, v in params["ddconfig"].items() if k in dd_fields}
    return parse(VQGANConfig, {"embed_dim": params.get("embed_dim"), "n_embed": params.get("n_embed"), "ddconfig": ddconfig}, f"{path}:{where}")


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in override.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


@vqbench.hookimpl
def vqbench_register_tokenizers(registry):
    registry.register("vqgan", VQGAN)
