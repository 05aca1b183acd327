"""What ``vqbench list`` prints: every registered plugin with its description, or one plugin in full (``list NAME``)."""

from __future__ import annotations

import dataclasses
import inspect
import re
import shutil
import textwrap
import types
from collections.abc import Collection
from importlib import metadata
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import yaml

from .errors import ConfigError
from .interfaces import NoConfig
from .plugins import BUILTIN_DISTRIBUTION, ENTRY_POINT_GROUP, Registries
from .registry import Registry, did_you_mean

# Where a benchmark file sets each kind's Config keys.
WHERE = {
    "tokenizers": "tokenizer.params", "priors": "priors[].params", "backbones": "priors[].params.backbone",
    "datasets": "dataset.params", "metrics": "metrics.{name}", "feature_extractors": "",
}  # fmt: skip


def overview(regs: Registries, width: int | None = None) -> str:
    """Every registered plugin by kind: name, origin and the whole first paragraph of its docstring, wrapped."""
    width = width or terminal_width()
    packages = plugin_packages()
    rows = [
        (kind, name, origin_label(registry.origin(name), packages), summary(entry))
        for kind, registry in regs.kinds().items()
        for name, entry in registry.items()
    ]
    name_w = max((len(r[1]) for r in rows), default=0)
    origin_w = max((len(r[2]) for r in rows), default=0)
    lines: list[str] = []
    for kind in regs.kinds():
        lines.append(f"{kind}:")
        for _, name, origin, text in (r for r in rows if r[0] == kind):
            head = f"  {name:<{name_w}}  {origin:<{origin_w}}  "
            wrapped = textwrap.wrap(text, max(width - len(head), 30), break_on_hyphens=False) or [""]
            lines.append((head + wrapped[0]).rstrip())
            lines += [" " * len(head) + line for line in wrapped[1:]]
    return "\n".join(lines)


def detail(regs: Registries, name: str) -> str:
    """One plugin in full: kind, origin, docstring, config keys with types and defaults (and a prior's sampler
    settings). A name registered under several kinds shows each."""
    found = [(kind, registry) for kind, registry in regs.kinds().items() if name in registry]
    if not found:
        known = sorted({n for registry in regs.kinds().values() for n in registry.names()})
        raise ConfigError("list", f"no plugin is registered as '{name}'{did_you_mean(name, known)} (`vqbench list` shows every name)")
    return "\n\n".join(_detail(kind, registry, name, regs) for kind, registry in found)


def _detail(kind: str, registry: Registry, name: str, regs: Registries) -> str:
    cls = registry.get(name)
    plugin = registry.origin(name)
    package = plugin_packages().get(plugin)
    lines = [
        f"{registry.kind} '{name}'",
        f"  origin: plugin '{plugin}'" + (f", package {package}" if package else ", registered in-process"),
        f"  class: {cls.__module__}.{cls.__qualname__}",
    ]
    if kind == "priors":
        can = [c for c, yes in (("inpainting", cls.supports_inpainting), ("likelihood", cls.supports_likelihood)) if yes]
        lines.append(
            f"  supports: {', '.join(can) or 'sampling only'}; {'trained by gradient descent' if cls.trainable else 'fitted in closed form'}"
        )
    if getattr(cls, "presets", None):
        lines.append(f"  presets: {', '.join(cls.presets)}")
    doc = _markup(inspect.cleandoc(cls.__doc__ or "")) or "(no docstring)"
    lines += ["", textwrap.indent(doc, "  "), ""]
    config = getattr(cls, "Config", NoConfig)
    sampler = getattr(cls, "sampler_config", None)
    sampler_keys = {f.name for f in dataclasses.fields(sampler)} if sampler is not None else set()
    where = WHERE.get(kind, "").format(name=name)
    keys = config_keys(config, regs, indent=4, skip=sampler_keys)
    lines += [f"  keys{f' ({where})' if where else ''}:", *keys] if keys else ["  keys: none"]
    if sampler is not None:
        lines.append("  sampler settings (in params, or priors[].sampling: they do not change training):")
        lines += config_keys(config, regs, indent=4, only=sampler_keys)
    train = getattr(cls, "TrainConfig", NoConfig)
    if train is not NoConfig:
        lines.append("  training keys (tokenizer.train; each preset has its own defaults):")
        lines += config_keys(train, regs, indent=4)
    return "\n".join(lines)


def config_keys(
    cls: type, regs: Registries, indent: int = 4, values: Any = None, skip: Collection[str] = (), only: Collection[str] | None = None
) -> list[str]:
    """``key: type = default  # comment`` per field of the dataclass ``cls``; a nested dataclass lists its own keys
    below, a backbone spec says where its keys are listed. ``values``: an instance whose values are the defaults."""
    if not dataclasses.is_dataclass(cls):
        return []
    try:
        hints = get_type_hints(cls)
    except Exception:  # an annotation that does not resolve here: show it as written
        hints = {}
    comments = field_comments(cls)
    pad = " " * indent
    lines = []
    for f in dataclasses.fields(cls):
        if not f.init or f.name in skip or (only is not None and f.name not in only):
            continue
        tp = hints.get(f.name, f.type)
        default = getattr(values, f.name) if values is not None else _default(f)
        line = f"{pad}{f.name}: {type_name(tp)}"
        nested = next((t for t in (tp, *get_args(tp)) if isinstance(t, type) and dataclasses.is_dataclass(t)), None)
        if default is dataclasses.MISSING:
            line += " (required)"
        elif nested is None or not dataclasses.is_dataclass(default):
            line += f" = {yaml_value(default)}"
        if f.name in comments:
            line += f"  # {_markup(comments[f.name])}"
        lines.append(line)
        if nested is not None:
            lines += config_keys(nested, regs, indent + 2, default if dataclasses.is_dataclass(default) else None)
        elif isinstance(default, dict) and default.get("name") in regs.backbones:
            lines.append(f"{pad}    (a backbone spec: `vqbench list {default['name']}` shows its keys)")
    return lines


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def field_comments(cls: type) -> dict[str, str]:
    """The trailing ``# comment`` of each field line in the source of ``cls`` and its dataclass bases."""
    comments: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            source = inspect.getsource(klass)
        except (OSError, TypeError):
            continue
        for match in re.finditer(r"^    (\w+)\s*:[^#\n]*#\s*(.+)$", source, flags=re.MULTILINE):
            comments[match.group(1)] = match.group(2).strip()
    return comments


def type_name(tp: Any) -> str:
    """A type annotation in the words of a YAML file: ``int``, ``float | null``, ``cosine | linear``, ``mapping``."""
    if isinstance(tp, str):
        return tp
    origin, args = get_origin(tp), get_args(tp)
    if tp is type(None):
        return "null"
    if tp is Any:
        return "any"
    if origin is Literal:
        return " | ".join(yaml_value(a) for a in args)
    if origin in (Union, types.UnionType):
        return " | ".join(type_name(a) for a in args)
    if origin is dict or tp is dict or (isinstance(tp, type) and dataclasses.is_dataclass(tp)):
        return "mapping"
    if origin in (list, tuple):
        return f"list of {type_name(args[0])}" if args and all(a == args[0] for a in args) else "list"
    return getattr(tp, "__name__", str(tp))


def yaml_value(value: Any) -> str:
    """``value`` as one line of YAML (flow style): ``null``, ``1.0``, ``{name: transformer, dim: 256}``."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    if isinstance(value, tuple):
        value = list(value)
    try:
        text = yaml.safe_dump(value, default_flow_style=True, width=10**6, sort_keys=False).strip()
    except yaml.YAMLError:
        return repr(value)
    return text.removesuffix("...").strip()


def summary(entry: Any) -> str:
    """The whole first paragraph of ``entry``'s own docstring, on one line."""
    paragraph = inspect.cleandoc(entry.__doc__ or "").split("\n\n")[0]
    return _markup(" ".join(paragraph.split()))


def _markup(text: str) -> str:
    return text.replace("``", "`")


def plugin_packages() -> dict[str, str]:
    """Plugin (entry-point) name → ``package version`` of the distribution declaring it."""
    return {ep.name: f"{ep.dist.name} {ep.dist.version}" for ep in metadata.entry_points(group=ENTRY_POINT_GROUP) if ep.dist is not None}


def origin_label(plugin: str, packages: dict[str, str]) -> str:
    """The plugin's name, and the package it comes from unless that is vqbench itself."""
    package = packages.get(plugin, "")
    return f"{plugin} ({package.split()[0]})" if package and package.split()[0] != BUILTIN_DISTRIBUTION else plugin


def terminal_width() -> int:
    return max(60, min(shutil.get_terminal_size((100, 24)).columns, 120))
