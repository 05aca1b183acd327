"""Plugin discovery (entry-point group ``vqbench``) and the registries the plugins fill."""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, fields
from importlib import metadata
from types import ModuleType
from typing import Any

import pluggy

from . import hookspecs
from .checkpoints import CheckpointFormat
from .errors import VQBenchError
from .interfaces import Backbone, FeatureExtractor, ImageSource, LatentSource, Metric, Prior, Tokenizer
from .registry import Registry
from .tracking import Tracker

ENTRY_POINT_GROUP = "vqbench"
DISABLE_AUTOLOAD_ENV = "VQBENCH_DISABLE_PLUGIN_AUTOLOAD"
EXTRA_PLUGINS_ENV = "VQBENCH_PLUGINS"
BUILTIN_DISTRIBUTION = "vqbench"


INTERFACES: dict[str, type | tuple[type, ...]] = {
    "tokenizers": Tokenizer, "priors": Prior, "backbones": Backbone, "datasets": (ImageSource, LatentSource),
    "metrics": Metric, "feature_extractors": FeatureExtractor, "checkpoint_formats": CheckpointFormat, "trackers": Tracker,
}  # fmt: skip


@dataclass
class Registries:
    """One registry per plugin kind; each accepts only classes implementing that kind's interface."""

    tokenizers: Registry[type[Tokenizer]]
    priors: Registry[type[Prior]]
    backbones: Registry[type[Backbone]]
    datasets: Registry[type[ImageSource] | type[LatentSource]]
    metrics: Registry[type[Metric]]
    feature_extractors: Registry[type[FeatureExtractor]]
    checkpoint_formats: Registry[type[CheckpointFormat]]
    trackers: Registry[type[Tracker]]

    @classmethod
    def empty(cls) -> Registries:
        return cls(**{f.name: Registry(f.name[:-1].replace("_", " "), INTERFACES[f.name]) for f in fields(cls)})

    def kinds(self) -> dict[str, Registry]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


_manager: pluggy.PluginManager | None = None
_registries: Registries | None = None
_extra: list[Any] = []


def _entry_points() -> list[metadata.EntryPoint]:
    return sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: ep.name)


def _new_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager("vqbench")
    pm.add_hookspecs(hookspecs)
    autoload = os.environ.get(DISABLE_AUTOLOAD_ENV, "").strip() in ("", "0", "false")
    found_builtin = False
    for ep in _entry_points():
        builtin = ep.dist is not None and ep.dist.name == BUILTIN_DISTRIBUTION
        found_builtin |= builtin
        if (builtin or autoload) and pm.get_plugin(ep.name) is None:
            pm.register(ep.load(), name=ep.name)
    if not found_builtin:
        raise VQBenchError(
            "vqbench's built-in plugins were not found in the 'vqbench' entry-point group: "
            "install the package (`pip install -e .` in the repository, or `make setup`)"
        )
    for module_name in filter(None, os.environ.get(EXTRA_PLUGINS_ENV, "").split(",")):
        pm.register(importlib.import_module(module_name.strip()), name=module_name.strip())
    for plugin in _extra:
        pm.register(plugin)
    pm.check_pending()  # a mistyped hook name fails loudly here
    return pm


def plugin_manager() -> pluggy.PluginManager:
    global _manager
    if _manager is None:
        _manager = _new_manager()
    return _manager


def registries() -> Registries:
    """The registries filled by every loaded plugin (built once, then cached)."""
    global _registries
    if _registries is None:
        pm = plugin_manager()
        regs = Registries.empty()
        for kind, registry in regs.kinds().items():
            caller = getattr(pm.hook, f"vqbench_register_{kind}")
            for impl in reversed(caller.get_hookimpls()):
                origin = impl.plugin_name
                impl.function(registry=_OriginRegistry(registry, origin))
        _registries = regs
    return _registries


class _OriginRegistry:
    """Registry view that records which plugin registered each entry."""

    def __init__(self, registry: Registry, origin: str):
        self._registry, self._origin = registry, origin

    def register(self, name: str, entry: Any) -> Any:
        return self._registry.register(name, entry, self._origin)

    def __getattr__(self, item: str) -> Any:
        return getattr(self._registry, item)


def register_plugin(plugin: ModuleType | object) -> None:
    """Register a plugin object in-process (tests, notebooks); registries are rebuilt on next use."""
    _extra.append(plugin)
    reset(keep_extra=True)


def reset(keep_extra: bool = False) -> None:
    """Forget loaded plugins and registries (used by tests and after installing a plugin)."""
    global _manager, _registries
    _manager, _registries = None, None
    if not keep_extra:
        _extra.clear()
