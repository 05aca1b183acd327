"""Atomic writes, content hashing and safe weight loading."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from . import liveness
from .errors import ConfigError, DataError, DiskFull


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling path; on success it is renamed over ``path`` (file or directory). The temporary
    folder's name carries this process's tag, so a later run removes it if this process is killed meanwhile
    (``remove_leftovers``)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.~{liveness.tag()}~", dir=path.parent)) / "item"
    except OSError as err:
        if is_disk_full(err):
            raise DiskFull(path) from err
        raise
    try:
        yield tmp
        if path.is_dir() and not path.is_symlink():
            old = path.with_name(f".{path.name}.old~{liveness.tag()}~")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except DiskFull as err:  # a write nested in this one (a file of a folder written atomically) names its target
        if Path(err.path).is_relative_to(tmp.parent):
            raise DiskFull(path) from err
        raise
    except (OSError, RuntimeError) as err:
        if is_disk_full(err):  # one line for the user instead of a traceback; the temporary goes below
            raise DiskFull(path) from err
        raise
    finally:
        shutil.rmtree(tmp.parent, ignore_errors=True)


_TORCH_WRITE_FAILED = ("unexpected pos", "file write failed", "PytorchStreamWriter failed writing")
_SHORT_WRITE = re.compile(r"\d+ requested and \d+ written")
_NO_SPACE = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}


def is_disk_full(err: BaseException) -> bool:
    """True when ``err`` is a write that failed for lack of space: an OSError with errno ENOSPC or EDQUOT, numpy's
    short write (``ndarray.tofile``, used by ``np.save``, drops the errno) or torch's zip writer failing to write
    (``torch.save``, also without the errno). Any other error, a RuntimeError not from writing included, is not."""
    if isinstance(err, OSError):
        return err.errno in _NO_SPACE or (err.errno is None and _SHORT_WRITE.search(str(err)) is not None)
    if isinstance(err, RuntimeError):
        return any(part in str(err) for part in _TORCH_WRITE_FAILED)
    return False


def remove_leftovers(root: str | os.PathLike[str]) -> list[Path]:
    """Remove the temporaries (atomic writes, claim files) under ``root`` that processes of this host left when they
    were killed; returns what was removed. Temporaries of live processes and of other hosts are kept."""
    removed = []
    for folder, dirs, files in os.walk(os.fspath(root)):
        for name in [*dirs, *files]:
            if name.startswith(".") and liveness.tagged_owner_gone(name):
                target = Path(folder) / name
                original = Path(folder) / name[1 : name.find(".old~")] if ".old~" in name else None
                if original is not None and not original.exists():  # killed between the two renames of a folder
                    os.replace(target, original)  # the previous version is the only one: restore it
                    removed.append(target)
                    continue
                shutil.rmtree(target, ignore_errors=True) if target.is_dir() and not target.is_symlink() else target.unlink(missing_ok=True)
                removed.append(target)
        dirs[:] = [d for d in dirs if (Path(folder) / d).is_dir()]
    return removed


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
        if is_disk_full(err):
            raise DiskFull(existing) from None
        raise ConfigError(key, f"cannot write in {str(existing)!r} ({err.strerror or err}); choose a writable folder") from None


class Inert:
    """Stands in for a class a foreign checkpoint names (a Lightning callback, a config object): built from its
    pickled state without running any of the original code."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args, self.kwargs = args, kwargs

    def __setstate__(self, state: Any) -> None:
        self.state = state


def load_torch(path: str | os.PathLike, map_location: str | torch.device = "cpu", inert_globals: bool = False) -> Any:
    """Load weights without executing pickled code (``weights_only=True``). With ``inert_globals`` the classes and
    functions a foreign checkpoint names besides tensors (e.g. Lightning's callback states) load as ``Inert``
    objects, so their weights can be read without the code that wrote them."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: checkpoint not found")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: the checkpoint file is empty (an interrupted copy or download?); replace it")
    try:
        stand_ins: list[Any] = []
        if inert_globals:
            names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
            stand_ins = [(type(name.rsplit(".", 1)[-1], (Inert,), {"__module__": __name__}), name) for name in names]
        with torch.serialization.safe_globals(stand_ins):
            return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 - report any unpickling failure the same way
        raise DataError(
            f"{path}: cannot be loaded safely with weights_only=True ({_load_failure(err)}): a damaged file, not a PyTorch "
            "checkpoint, or one holding objects other than tensors; re-save it as a plain state dict"
        ) from None


def _load_failure(err: Exception) -> str:
    """The informative part of a failed ``torch.load`` (torch's weights-only message puts it after a long preamble)."""
    text = str(err)
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1]
    first = next((line.strip() for line in text.splitlines() if line.strip()), "no message")
    return f"{type(err).__name__}: {first}"


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
