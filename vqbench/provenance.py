"""Where numbers come from: package versions, git commit, device, command line, and digests of the code that
computes them (so caches and finished cells are invalidated when that code changes)."""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import inspect
import platform
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from . import __version__

PACKAGES = ("torch", "torchvision", "torch-fidelity", "lpips", "numpy", "pandas", "einops", "pluggy")
CORE = Path(__file__).resolve().parent


@functools.cache
def _file_digest(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _source_files(obj: Any) -> set[str]:
    """The source file defining ``obj`` (a class, function, module or instance); a module's whole package folder for
    the core (``vqbench``), since its pieces work together."""
    if inspect.ismodule(obj) and hasattr(obj, "__path__"):  # a package: every file in it
        return {str(p.resolve()) for folder in obj.__path__ for p in Path(folder).rglob("*.py")}
    target = obj if inspect.ismodule(obj) or inspect.isclass(obj) or inspect.isfunction(obj) else type(obj)
    try:
        path = Path(inspect.getfile(target)).resolve()
    except (TypeError, OSError):
        return set()
    if path.suffix != ".py" or "site-packages" in path.parts and "torch" in path.parts:
        return set()
    return {str(path)}


def code_digest(*objects: Any, core: bool = True) -> str:
    """A short digest of the source files behind ``objects`` (classes, functions, instances, modules; a package means
    all its files; for an nn.Module, the class of every submodule in its tree) and, with ``core``, of every file of the
    vqbench package. Any edit to that code changes the digest."""
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
