"""Where numbers come from: package versions, git commit, device, command line, and digests of the code that
computes them (so caches and finished cells are invalidated when that code changes)."""

from __future__ import annotations

import ast
import contextlib
import functools
import hashlib
import importlib.metadata
import inspect
import logging
import platform
import re
import subprocess
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import torch

from . import __version__

PACKAGES = ("torch", "torchvision", "torch-fidelity", "lpips", "numpy", "pandas", "einops", "pluggy")
CORE = Path(__file__).resolve().parent
log = logging.getLogger(__name__)


def _without_docstrings(tree: ast.AST) -> ast.AST:
    """``tree`` with the docstring of every module, class and function removed (they document, never compute)."""
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
                node.body = body[1:]
    return tree


@functools.cache
def _file_digest(path: str) -> str:
    """Digest of a Python file's syntax tree without docstrings: comments, formatting and documentation never change
    it, any change of what the code does does. A file that does not parse is digested by its bytes."""
    raw = Path(path).read_bytes()
    try:
        tree = _without_docstrings(ast.parse(raw, filename=path))
    except (SyntaxError, ValueError):
        return hashlib.sha256(raw).hexdigest()
    return hashlib.sha256(ast.dump(tree, annotate_fields=False, include_attributes=False).encode()).hexdigest()


def _source_file(target: Any) -> str | None:
    try:
        path = Path(inspect.getfile(target)).resolve()
    except (TypeError, OSError):
        return None
    if path.suffix != ".py" or "site-packages" in path.parts and "torch" in path.parts:
        return None
    return str(path)


def _source_files(obj: Any) -> set[str]:
    """The source file defining ``obj`` (a class, function, module or instance) and, for a class, those of its base
    classes from its own package outside the core (a plugin's mixins); a module's whole package folder for the core
    (``vqbench``), since its pieces work together."""
    if inspect.ismodule(obj) and hasattr(obj, "__path__"):  # a package: every file in it
        return {str(p.resolve()) for folder in obj.__path__ for p in Path(folder).rglob("*.py")}
    target = obj if inspect.ismodule(obj) or inspect.isclass(obj) or inspect.isfunction(obj) else type(obj)
    own = _source_file(target)
    if own is None:
        return set()
    package = getattr(target, "__module__", "").partition(".")[0]
    mixins = [base for base in (target.__mro__[1:] if inspect.isclass(target) else ()) if base.__module__.partition(".")[0] == package]
    paths = (_source_file(base) for base in mixins)
    return {own} | {path for path in paths if path is not None and not Path(path).is_relative_to(CORE)}


def code_digest(*objects: Any, core: bool = True) -> str:
    """A short digest of the source files behind ``objects`` (classes, functions, instances, modules; a package means
    all its files; for an nn.Module, the class of every submodule in its tree) and, with ``core``, of every file of the
    vqbench package. Any change of behaviour in that code changes the digest; comments, docstrings and formatting
    do not (see ``_file_digest``)."""
    files: set[str] = set()
    for obj in objects:
        members: Iterable[Any] = obj.modules() if isinstance(obj, torch.nn.Module) else [obj]
        for member in members:
            files |= _source_files(member)
    if core:
        files |= {str(p) for p in CORE.rglob("*.py")}
    h = hashlib.sha256()
    for path in sorted(files):
        h.update(Path(path).name.encode() + b"\0" + _file_digest(path).encode())
    return h.hexdigest()[:16]


_REUSE_STALE = False
STALE_ENTRIES: list[str] = []  # cache entries of other code reused in this process (reported in the protocol)


@contextlib.contextmanager
def reuse_stale(enabled: bool) -> Iterator[None]:
    """Within this block ``code_keyed`` falls back to cache entries computed by other code (``--reuse-stale``)."""
    global _REUSE_STALE
    previous, _REUSE_STALE = _REUSE_STALE, enabled
    STALE_ENTRIES.clear()
    try:
        yield
    finally:
        _REUSE_STALE = previous


def code_keyed(folder: Path, stem: str, code: str, suffix: str = "", complete: Callable[[Path], bool] = Path.exists) -> Path:
    """The cache entry ``folder/<stem>-<code><suffix>``: ``stem`` fingerprints the settings, ``code`` the code digest.
    Under ``reuse_stale`` a missing entry falls back to the newest ``complete`` one of the same settings computed by
    other code."""
    exact = folder / f"{stem}-{code}{suffix}"
    if exact.exists() or not _REUSE_STALE or not folder.is_dir():
        return exact
    if torch.distributed.is_available() and torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
        log.warning("%s: not in the cache; --reuse-stale falls back to other code's entries in single-process runs only", exact)
        return exact  # ranks choosing on their own could pick different entries
    pattern = re.compile(re.escape(stem) + r"-[0-9a-f]{16}" + re.escape(suffix) + "$")
    others = sorted((p for p in folder.iterdir() if pattern.fullmatch(p.name) and complete(p)), key=lambda p: p.stat().st_mtime)
    if not others:
        return exact
    log.warning("%s: computed by other code (now %s), reused (--reuse-stale)", others[-1], code)
    STALE_ENTRIES.append(str(others[-1]))
    return others[-1]


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"vqbench": __version__, "python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_commit() -> str | None:
    """The checkout's commit (with ``+dirty`` when it has uncommitted changes), or None outside a git checkout."""
    root = CORE.parent
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+dirty" if dirty else "")


def device_facts(device: torch.device) -> dict[str, Any]:
    facts: dict[str, Any] = {
        "type": device.type,
        "cpu": platform.processor() or platform.machine(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        facts |= {
            "name": torch.cuda.get_device_name(device), "capability": ".".join(map(str, torch.cuda.get_device_capability(device))),
            "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
        }  # fmt: skip
    return facts


def provenance(device: torch.device) -> dict[str, Any]:
    """Everything a reader needs to reproduce a results folder, recorded at the start of a run."""
    return {"versions": package_versions(), "git_commit": git_commit(), "device": device_facts(device), "command": sys.argv[:]}
