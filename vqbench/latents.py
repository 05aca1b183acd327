"""LatentDataset format v1: a directory of ``codes.npy`` (+ ``labels.npy``) and ``meta.json``.

See ``docs/latent-format.md``. ``write`` is atomic (temp dir + rename); ``open`` validates everything and memory-maps
the codes.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import DataError
from .io import atomic_path, read_json, write_json

FORMAT_NAME = "vqbench-latents"
FORMAT_VERSION = 1
REQUIRED_META = ("format", "version", "codebook_size", "h", "w", "count", "dtype", "codes_sha256")


def code_dtype(codebook_size: int) -> np.dtype:
    """uint16 when every code fits, else int32."""
    return np.dtype(np.uint16) if codebook_size <= 65536 else np.dtype(np.int32)


def _array_sha256(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


@dataclass
class LatentDataset:
    """An opened latent dataset; ``codes`` is a read-only memory map of shape N×h×w."""

    path: Path
    codes: np.ndarray
    meta: dict[str, Any]
    labels: np.ndarray | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def codebook_size(self) -> int:
        return int(self.meta["codebook_size"])

    @property
    def latent_shape(self) -> tuple[int, int]:
        return int(self.meta["h"]), int(self.meta["w"])

    def __len__(self) -> int:
        return int(self.codes.shape[0])

    def tensor(self, indices: Any = slice(None)) -> torch.Tensor:
        """Codes as a LongTensor (B×h×w)."""
        return torch.from_numpy(np.asarray(self.codes[indices]).astype(np.int64))


def write(
    path: str | os.PathLike,
    codes: np.ndarray | torch.Tensor,
    codebook_size: int,
    labels: np.ndarray | torch.Tensor | None = None,
    **meta: Any,
) -> Path:
    """Write a latent dataset atomically. Extra keyword arguments go into ``meta.json``."""
    if isinstance(codes, torch.Tensor):
        codes = codes.detach().cpu().numpy()
    codes = np.asarray(codes)
    if codes.ndim != 3:
        raise ValueError(f"codes must have shape N×h×w, got {codes.shape}")
    if codes.size and (codes.min() < 0 or codes.max() >= codebook_size):
        raise ValueError(f"codes must lie in [0, {codebook_size}), got range [{codes.min()}, {codes.max()}]")
    stored = codes.astype(code_dtype(codebook_size))
    full_meta = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "codebook_size": int(codebook_size),
        "h": int(codes.shape[1]),
        "w": int(codes.shape[2]),
        "count": int(codes.shape[0]),
        "dtype": stored.dtype.name,
        "codes_sha256": _array_sha256(stored),
        **meta,
    }
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.mkdir()
        np.save(tmp / "codes.npy", stored)
        if labels is not None:
            labels = labels.cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
            if len(labels) != len(codes):
                raise ValueError(f"labels has {len(labels)} rows but codes has {len(codes)}")
            np.save(tmp / "labels.npy", labels)
            full_meta["labels_shape"] = list(labels.shape)
        write_json(tmp / "meta.json", full_meta)
    return path


def open(path: str | os.PathLike, verify_checksum: bool = True) -> LatentDataset:  # noqa: A001 - mirrors builtins.open
    """Open and validate a latent dataset; any problem raises ``DataError`` naming the file."""
    path = Path(path)
    if not path.is_dir():
        raise DataError(f"{path}: latent dataset directory not found")
    meta_path, codes_path = path / "meta.json", path / "codes.npy"
    meta = read_json(meta_path)
    missing = [k for k in REQUIRED_META if k not in meta]
    if missing:
        raise DataError(f"{meta_path}: missing keys {', '.join(missing)}")
    if meta["format"] != FORMAT_NAME or meta["version"] != FORMAT_VERSION:
        raise DataError(
            f"{meta_path}: format {meta['format']!r} version {meta['version']!r} is not supported "
            f"(this vqbench reads {FORMAT_NAME} v{FORMAT_VERSION}); re-encode with `vqbench encode`"
        )
    if not codes_path.is_file():
        raise DataError(f"{codes_path}: file not found")
    try:
        codes = np.load(codes_path, mmap_mode="r", allow_pickle=False)
    except ValueError as err:
        raise DataError(f"{codes_path}: not a valid .npy array ({err})") from None
    expected_dtype = code_dtype(int(meta["codebook_size"]))
    if codes.dtype != expected_dtype or meta["dtype"] != expected_dtype.name:
        raise DataError(f"{codes_path}: dtype {codes.dtype} (meta says {meta['dtype']}), expected {expected_dtype}")
    shape = (meta["count"], meta["h"], meta["w"])
    if tuple(codes.shape) != tuple(shape):
        raise DataError(f"{codes_path}: shape {tuple(codes.shape)} does not match meta.json count×h×w {shape}")
    if codes.size and int(codes.max()) >= int(meta["codebook_size"]):
        raise DataError(f"{codes_path}: code {int(codes.max())} is out of range for codebook size {meta['codebook_size']}")
    if verify_checksum and _array_sha256(np.asarray(codes)) != meta["codes_sha256"]:
        raise DataError(f"{codes_path}: checksum does not match meta.json codes_sha256 (file corrupted or edited)")
    labels = None
    if (path / "labels.npy").is_file():
        labels = np.load(path / "labels.npy", mmap_mode="r", allow_pickle=False)
        if len(labels) != len(codes):
            raise DataError(f"{path / 'labels.npy'}: {len(labels)} rows, but codes.npy has {len(codes)}")
    return LatentDataset(path=path, codes=codes, meta=meta, labels=labels)
