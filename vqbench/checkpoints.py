"""Priors trained elsewhere: ``priors[].checkpoint`` loads weights instead of training them.

A checkpoint format turns a file into a ``LoadedPrior`` — the prior's name, its configuration, weights and the latent
geometry it was trained on — so the runner can check it against the benchmark before anything is written and then
evaluate it like any other row. Formats are looked up by name in ``FORMATS``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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


def _vqbench(path: Path, key: str) -> LoadedPrior:
    """A cell's ``prior.pt`` (from any results folder); files written before they recorded their geometry take it
    from the cell's ``config.json`` beside them."""
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


FORMATS: dict[str, Callable[[Path, str], LoadedPrior]] = {"vqbench": _vqbench}


def load(path: str, fmt: str, key: str) -> LoadedPrior:
    """The prior in checkpoint ``path`` of format ``fmt`` (``key`` names the config section in errors)."""
    file = Path(path).expanduser()
    if fmt not in FORMATS:
        raise ConfigError(f"{key}.format", f"unknown checkpoint format {fmt!r} (known: {', '.join(sorted(FORMATS))})")
    if not file.is_file():
        raise ConfigError(f"{key}.path", f"checkpoint {str(file)!r} not found")
    stat = file.stat()
    return _cached(str(file.resolve()), fmt, key, stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=2)  # the weights stay in memory: the last two files only
def _cached(path: str, fmt: str, key: str, size: int, mtime: int) -> LoadedPrior:
    return FORMATS[fmt](Path(path), key)


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
