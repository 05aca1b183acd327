"""Priors trained elsewhere: ``priors[].checkpoint`` loads weights instead of training them.

A checkpoint format turns a file into a ``LoadedPrior`` — the prior's name, its configuration, weights and the latent
geometry it was trained on — so the runner can check it against the benchmark before anything is written and then
evaluate it like any other row. Formats (``CheckpointFormat``) are registered by plugins like priors are.
"""

from __future__ import annotations

import functools
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch

from .errors import ConfigError, DataError
from .io import load_torch, read_json, sha256_file

PRIOR_FILE_FORMAT = "vqbench-prior"  # the ``format`` entry of the prior.pt files cells write


@dataclass
class LoadedPrior:
    """What a checkpoint holds, in vqbench's terms."""

    prior: str  # registered prior name
    config: dict[str, Any]  # the prior's Config as a mapping
    state_dict: dict[str, torch.Tensor] = field(repr=False)
    latent_shape: tuple[int, int]
    codebook_size: int
    num_classes: int
    sha256: str
    path: str
    config_sha256: str | None = None  # of the separate config file, where the format has one


class CheckpointFormat(ABC):
    """Reads prior checkpoints written by one code base (registered by name through
    ``vqbench_register_checkpoint_formats``) into vqbench's terms."""

    needs_config: ClassVar[bool] = False  # the architecture lives in a separate file (``checkpoint.config``)

    @classmethod
    @abstractmethod
    def read(cls, path: Path, config: Path | None, key: str) -> LoadedPrior:
        """The prior in ``path`` (``config``: its configuration file, where the format keeps one apart); errors name
        ``key``."""


class VqbenchFormat(CheckpointFormat):
    """A cell's ``prior.pt`` (from any results folder); files written before they recorded their geometry take it
    from the cell's ``config.json`` beside them."""

    @classmethod
    def read(cls, path: Path, config: Path | None, key: str) -> LoadedPrior:
        if config is not None:
            raise ConfigError(f"{key}.config", "a vqbench checkpoint holds its own config; remove `config`")
        return _vqbench(path, key)


def _vqbench(path: Path, key: str) -> LoadedPrior:
    state = load_torch(path)
    if not isinstance(state, dict) or not isinstance(state.get("state_dict"), dict) or not isinstance(state.get("config"), dict):
        raise ConfigError(f"{key}.path", f"{path} is not a vqbench prior checkpoint (a results folder's runs/<cell>/prior.pt)")
    meta = state
    if "prior" not in state:
        beside = path.with_name("config.json")
        if not beside.is_file():
            raise ConfigError(
                f"{key}.path", f"{path} does not record which prior it holds and has no config.json beside it; copy the cell's config.json next to it"
            )
        meta = read_json(beside)
    try:
        return LoadedPrior(
            prior=str(meta["prior"]), config=dict(state["config"]), state_dict=state["state_dict"],
            latent_shape=(int(meta["latent_shape"][0]), int(meta["latent_shape"][1])), codebook_size=int(meta["codebook_size"]),
            num_classes=int(meta.get("num_classes", 0)), sha256=sha256_file(path), path=str(path),
        )  # fmt: skip
    except (KeyError, TypeError, ValueError, IndexError) as err:
        raise DataError(f"{path}: incomplete vqbench prior checkpoint ({type(err).__name__}: {err})") from None


def load(path: str, fmt: str, key: str, config: str | None = None) -> LoadedPrior:
    """The prior in checkpoint ``path`` of format ``fmt`` with its ``config`` file where the format has one (``key``
    names the config section in errors)."""
    from .plugins import registries

    reader = registries().checkpoint_formats.get(fmt, f"{key}.format")
    file = Path(path).expanduser()
    if not file.is_file():
        raise ConfigError(f"{key}.path", f"checkpoint {str(file)!r} not found")
    if config is None and reader.needs_config:
        raise ConfigError(f"{key}.config", f"a '{fmt}' checkpoint keeps its architecture in a separate file; set `config: FILE`")
    stamps: tuple[Any, ...] = (str(file.resolve()), file.stat().st_size, file.stat().st_mtime_ns)
    if config is not None:
        conf = Path(config).expanduser()
        if not conf.is_file():
            raise ConfigError(f"{key}.config", f"config file {str(conf)!r} not found")
        stamps += (str(conf.resolve()), conf.stat().st_size, conf.stat().st_mtime_ns)
    return _cached(reader, key, stamps)


@functools.lru_cache(maxsize=2)  # the weights stay in memory: the last two files only
def _cached(reader: type[CheckpointFormat], key: str, stamps: tuple[Any, ...]) -> LoadedPrior:
    loaded = reader.read(Path(stamps[0]), Path(stamps[3]) if len(stamps) > 3 else None, key)
    if len(stamps) > 3:
        loaded.config_sha256 = sha256_file(stamps[3])
    return loaded


def check_prior(loaded: LoadedPrior, name: str, key: str) -> None:
    """Stop unless the checkpoint holds prior ``name``."""
    if loaded.prior != name:
        raise ConfigError(f"{key}.path", f"{loaded.path} holds a '{loaded.prior}' prior, but this row is '{name}'; set `name: {loaded.prior}`")


def check_fits(loaded: LoadedPrior, latent_shape: tuple[int, int], codebook_size: int, key: str) -> None:
    """Stop unless the checkpoint's prior was trained on this latent shape and codebook."""
    if tuple(loaded.latent_shape) != tuple(latent_shape) or loaded.codebook_size != codebook_size:
        raise ConfigError(
            f"{key}.path",
            f"{loaded.path} was trained on {loaded.latent_shape[0]}×{loaded.latent_shape[1]} latents with {loaded.codebook_size} codes, "
            f"but this benchmark's latents are {latent_shape[0]}×{latent_shape[1]} with {codebook_size} codes; use the tokenizer it was trained with",
        )


def load_weights(module: torch.nn.Module, loaded: LoadedPrior, key: str, assign: bool = False) -> None:
    """``module.load_state_dict`` of the checkpoint's weights; a mismatch stops with one line naming the file."""
    try:
        module.load_state_dict(loaded.state_dict, assign=assign)
    except RuntimeError as err:
        detail = " ".join(line.strip() for line in str(err).splitlines()[1:]) or str(err)
        raise ConfigError(f"{key}.path", f"{loaded.path} does not fit the prior it describes ({detail[:400]})") from None
