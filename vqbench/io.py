"""Atomic writes, content hashing and safe weight loading."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from .errors import ConfigError, DataError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling path; on success it is renamed over ``path`` (file or directory)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent)) / "item"
    try:
        yield tmp
        if path.is_dir() and not path.is_symlink():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp.parent, ignore_errors=True)


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_json(path: str | os.PathLike, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=True, default=_json_default) + "\n")


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {value!r}")


def read_json(path: str | os.PathLike) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: not valid JSON ({err})") from None


def save_torch(path: str | os.PathLike, obj: Any) -> None:
    """``torch.save`` through a temp file + rename (only tensors, numbers, strings, lists and dicts)."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def check_writable_folder(path: str | os.PathLike, key: str) -> None:
    """Stop with a ConfigError naming ``key`` unless ``path`` is, or can be created as, a folder this process can
    write; probes with a temporary file that is removed again, so nothing is left behind."""
    path = Path(path).expanduser()
    existing = path
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        what = "is a file" if existing == path else f"lies under the file {str(existing)!r}"
        raise ConfigError(key, f"{str(path)!r} {what}; give a folder (it is created if missing)")
    try:
        handle, probe = tempfile.mkstemp(dir=existing, prefix=".vqbench-write-probe-")
        os.close(handle)
        os.unlink(probe)
    except OSError as err:
        raise ConfigError(key, f"cannot write in {str(existing)!r} ({err.strerror or err}); choose a writable folder") from None


def load_torch(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Any:
    """Load weights without executing pickled code (``weights_only=True``)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: checkpoint not found")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: the checkpoint file is empty (an interrupted copy or download?); replace it")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 - report any unpickling failure the same way
        first = (str(err).splitlines() or ["no message"])[0]
        raise DataError(
            f"{path}: cannot load safely with weights_only=True ({type(err).__name__}: {first}); re-save it as a plain state dict"
        ) from None


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def fingerprint(*parts: Any) -> str:
    """A short stable hash of JSON-serialisable parts (config dicts, versions, other hashes)."""
    text = json.dumps(parts, sort_keys=True, default=_json_default)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
