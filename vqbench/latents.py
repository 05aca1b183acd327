"""LatentDataset format v1: a directory of ``codes.npy`` (+ ``labels.npy``) and ``meta.json``.

See ``docs/latent-format.md``. ``write`` is atomic (temp dir + rename); ``open`` validates everything and memory-maps
the codes.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import DataError, DiskFull
from .io import atomic_path, is_disk_full, read_json, write_json

FORMAT_NAME = "vqbench-latents"
FORMAT_VERSION = 1
REQUIRED_META = ("format", "version", "codebook_size", "h", "w", "count", "dtype", "codes_sha256")


def code_dtype(codebook_size: int) -> np.dtype:
    """uint16 when every code fits, else int32."""
    return np.dtype(np.uint16) if codebook_size <= 65536 else np.dtype(np.int32)


def _array_sha256(array: np.ndarray, rows: int = 4096) -> str:
    """SHA-256 of the C-contiguous bytes, read ``rows`` rows at a time (a memory map is never loaded whole)."""
    digest = hashlib.sha256()
    if array.ndim == 0 or len(array) == 0:
        digest.update(np.ascontiguousarray(array).tobytes())
    for start in range(0, len(array) if array.ndim else 0, rows):
        digest.update(np.ascontiguousarray(array[start : start + rows]).tobytes())
    return digest.hexdigest()


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


PROGRESS_FILE = "progress.json"
_NO_FALLOCATE = {errno.EOPNOTSUPP, getattr(errno, "ENOTSUP", errno.EOPNOTSUPP), errno.EINVAL, errno.ENOSYS}


def _preallocate(path: Path) -> None:
    """Reserve the disk blocks of the new memory-mapped file ``path`` now. ``open_memmap`` leaves the file sparse,
    and storing into a sparse map on a full disk kills the process with SIGBUS; reserved, a full disk raises ENOSPC
    here instead. Where the file system cannot reserve (no ``posix_fallocate``), the file stays as it is."""
    if not hasattr(os, "posix_fallocate"):
        return
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, os.fstat(fd).st_size)
    except OSError as err:
        if err.errno not in _NO_FALLOCATE:
            raise
    finally:
        os.close(fd)


class LatentWriter:
    """Writes a latent dataset batch by batch: codes and source indices go into memory-mapped ``codes.npy`` and
    ``source_index.npy`` (sized for ``capacity`` rows), and ``progress.json`` records the finished batches after each
    one, so an interrupted write resumes after its last complete batch. ``finish`` trims the files to the rows
    written and writes ``meta.json`` last, atomically: a directory without it is unfinished. ``job`` identifies
    the work (inputs, batch size); progress left by a different job is discarded."""

    def __init__(self, path: str | os.PathLike, capacity: int, codebook_size: int, job: str):
        self.path, self.capacity, self.codebook_size, self.job = Path(path), int(capacity), int(codebook_size), job
        self.dtype = code_dtype(codebook_size)
        self.batches, self.rows, self.skipped = 0, 0, list[int]()
        self.grid: tuple[int, int] | None = None
        self._codes: np.memmap | None = None
        self._index: np.memmap | None = None
        progress = self.path / PROGRESS_FILE
        if progress.is_file() and not (self.path / "meta.json").is_file():
            state = read_json(progress)
            if state.get("job") == job and state.get("capacity") == self.capacity:
                self.batches, self.rows, self.skipped = int(state["batches"]), int(state["rows"]), list(state["skipped"])
                self.grid = tuple(state["grid"]) if state.get("grid") else None  # type: ignore[assignment]
                if self.grid is not None:
                    self._open("r+")
        if self.batches == 0:  # a fresh write: whatever was here is unfinished from now on
            for name in ("meta.json", PROGRESS_FILE, "labels.npy"):
                (self.path / name).unlink(missing_ok=True)

    def _open(self, mode: str) -> None:
        assert self.grid is not None
        codes, index = self.path / "codes.npy", self.path / "source_index.npy"
        if mode == "w+":
            try:
                self.path.mkdir(parents=True, exist_ok=True)
                for old in (codes, index):  # a new file: a process still mapping the old one keeps reading it intact
                    old.unlink(missing_ok=True)
                self._codes = np.lib.format.open_memmap(codes, "w+", self.dtype, (self.capacity, *self.grid))
                _preallocate(codes)
                self._index = np.lib.format.open_memmap(index, "w+", np.int64, (self.capacity,))
                _preallocate(index)
            except OSError as err:  # no room for them: give back what was taken, stop with one line
                self._codes = self._index = None
                self.grid = None
                for new in (codes, index):
                    with contextlib.suppress(OSError):
                        new.unlink(missing_ok=True)
                if is_disk_full(err):
                    raise DiskFull(self.path) from err
                raise
            return
        try:
            self._codes = np.load(codes, mmap_mode="r+", allow_pickle=False)
            self._index = np.load(index, mmap_mode="r+", allow_pickle=False)
        except (OSError, ValueError):  # files gone or damaged: start over
            self.batches, self.rows, self.skipped, self.grid = 0, 0, [], None
            return
        if len(self._codes) < self.rows or len(self._index) < self.rows or self._codes.shape[1:] != self.grid:
            self._codes = self._index = None
            self.batches, self.rows, self.skipped, self.grid = 0, 0, [], None

    def append(self, batch: int, codes: np.ndarray, kept: list[int] | np.ndarray, skipped: list[int] | tuple[int, ...] = ()) -> None:
        """Store batch ``batch`` (the next one): codes n×h×w of source indices ``kept``; ``skipped`` were unreadable."""
        if batch != self.batches:
            raise ValueError(f"batch {batch} given, expected batch {self.batches}")
        codes = np.asarray(codes)
        if len(codes) != len(kept):
            raise ValueError(f"{len(codes)} code grids for {len(kept)} indices")
        if len(codes):
            if codes.min() < 0 or codes.max() >= self.codebook_size:
                raise ValueError(f"codes must lie in [0, {self.codebook_size}), got range [{codes.min()}, {codes.max()}]")
            if self.grid is None:
                self.grid = (int(codes.shape[1]), int(codes.shape[2]))
                self._open("w+")
            assert self._codes is not None and self._index is not None
            self._codes[self.rows : self.rows + len(codes)] = codes.astype(self.dtype)
            self._index[self.rows : self.rows + len(codes)] = np.asarray(kept, dtype=np.int64)
            self._codes.flush()
            self._index.flush()
        self.batches, self.rows = self.batches + 1, self.rows + len(codes)
        self.skipped += [int(i) for i in skipped]
        state = {"job": self.job, "capacity": self.capacity, "batches": self.batches, "rows": self.rows, "grid": self.grid, "skipped": self.skipped}
        write_json(self.path / PROGRESS_FILE, state)

    def finish(self, labels: np.ndarray | None = None, **meta: Any) -> Path:
        """Trim to the rows written, write ``labels.npy`` (labels of every source index; the kept rows are stored)
        and then ``meta.json`` (extra keyword arguments go into it)."""
        if self.grid is None or self._codes is None or self._index is None:
            raise ValueError(f"{self.path}: no codes were written")
        self._codes, self._index = self._trim(self._codes, "codes.npy"), self._trim(self._index, "source_index.npy")
        full_meta = {
            "format": FORMAT_NAME, "version": FORMAT_VERSION, "codebook_size": self.codebook_size, "h": self.grid[0], "w": self.grid[1],
            "count": self.rows, "dtype": self.dtype.name, "codes_sha256": _array_sha256(self._codes), **meta,
        }  # fmt: skip
        if labels is not None:
            kept = np.asarray(labels)[np.asarray(self._index)]
            with atomic_path(self.path / "labels.npy") as tmp, tmp.open("wb") as handle:
                np.save(handle, kept)
            full_meta["labels_shape"] = list(kept.shape)
        write_json(self.path / "meta.json", full_meta)
        (self.path / PROGRESS_FILE).unlink(missing_ok=True)
        return self.path

    def _trim(self, array: np.memmap, name: str, rows: int = 4096) -> np.memmap:
        """``array[:self.rows]`` as the whole file ``name`` (copied in chunks into a new file, then renamed)."""
        if len(array) == self.rows:
            return array
        with atomic_path(self.path / name) as tmp:
            out = np.lib.format.open_memmap(tmp, "w+", array.dtype, (self.rows, *array.shape[1:]))
            _preallocate(tmp)  # a full disk: ENOSPC (DiskFull from atomic_path), not SIGBUS below
            for start in range(0, self.rows, rows):
                out[start : start + rows] = array[start : min(self.rows, start + rows)]
            out.flush()
            del out
        return np.load(self.path / name, mmap_mode="r+", allow_pickle=False)
