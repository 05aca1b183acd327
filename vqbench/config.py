"""Typed config parsing: dataclasses checked key by key, with did-you-mean on unknown keys.

Every plugin declares its parameters as a dataclass ``Config``; ``parse(Config, data, key)`` validates a dict against
it and names the full key path (``priors[1].params.temperature``) in any error.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import types
from typing import Any, Literal, TypeVar, Union, cast, get_args, get_origin, get_type_hints

import yaml

from .errors import ConfigError
from .registry import did_you_mean

T = TypeVar("T")


def _join(key: str, sub: str | int) -> str:
    if isinstance(sub, int):
        return f"{key}[{sub}]"
    return f"{key}.{sub}" if key else sub


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(tp) if a is not type(None)) + " or null"
    if origin in (list, tuple):
        return "list"
    if origin is dict:
        return "mapping"
    if dataclasses.is_dataclass(tp):
        return "mapping"
    return getattr(tp, "__name__", str(tp))


def coerce(tp: Any, value: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp`` and convert lists/dicts/dataclasses recursively."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:  # Optional[X]: X's own, more specific error
            return coerce(options[0], value, key)
        for arg in options:
            try:
                return coerce(arg, value, key)
            except ConfigError:
                continue
        raise ConfigError(key, f"expected {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        if value not in get_args(tp):
            raise ConfigError(key, f"must be one of {_type_name(tp)}, got {value!r}{did_you_mean(str(value), [str(a) for a in get_args(tp)])}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(key, f"expected a list, got {value!r}")
        (item_tp, *rest) = get_args(tp) or (Any,)
        if origin is tuple and rest and rest != [Ellipsis]:
            return tuple(coerce(t, v, _join(key, i)) for i, (t, v) in enumerate(zip(get_args(tp), value)))
        items = [coerce(item_tp, v, _join(key, i)) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(key, f"expected a mapping, got {value!r}")
        _, val_tp = get_args(tp) or (str, Any)
        return {str(k): coerce(val_tp, v, _join(key, str(k))) for k, v in value.items()}
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        return parse(tp, value, key)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(key, f"expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(key, f"expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):
            with contextlib.suppress(ValueError):  # YAML 1.1 reads 3e-5 as a string
                value = float(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(key, f"expected a number, got {value!r}")
        if abs(value) > 1.7976931348623157e308 or not math.isfinite(value):  # ints beyond a float, NaN, ±inf
            raise ConfigError(key, f"expected a finite number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(key, f"expected a string, got {value!r}")
        return value
    if isinstance(tp, type) and not isinstance(value, tp):
        raise ConfigError(key, f"expected {_type_name(tp)}, got {value!r}")
    return value


def parse(cls: type[T], data: Any, key: str = "") -> T:
    """Build dataclass ``cls`` from a mapping, rejecting unknown keys and wrong types with the key path."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(key or "config", f"expected a mapping, got {data!r}")
    hints = get_type_hints(cls)
    fields = dataclasses.fields(cast(Any, cls))
    known = [f.name for f in fields if f.init]
    for name in data:
        if name not in known:
            raise ConfigError(_join(key, str(name)), f"unknown key{did_you_mean(str(name), known)} (allowed: {', '.join(known)})")
    kwargs = {}
    for field in fields:
        if not field.init:
            continue
        if field.name in data:
            kwargs[field.name] = coerce(hints[field.name], data[field.name], _join(key, field.name))
            if (field.name == "seed" or field.name.endswith("_seed")) and isinstance(kwargs[field.name], int) and kwargs[field.name] < 0:
                raise ConfigError(_join(key, field.name), f"a seed must be non-negative, got {kwargs[field.name]}")
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise ConfigError(_join(key, field.name), "required key is missing")
    obj = cls(**kwargs)
    check = getattr(obj, "validate", None)
    if callable(check):
        check(key)
    return obj


def to_dict(obj: Any) -> Any:
    """Dataclass (nested) → plain dict/list values suitable for JSON/YAML. A field with ``metadata={"omit_default":
    True}`` is left out while it holds its default (an option added later keeps older fingerprints valid)."""
    if dataclasses.is_dataclass(obj):
        return {
            f.name: to_dict(getattr(obj, f.name))
            for f in dataclasses.fields(obj)
            if not (f.metadata.get("omit_default") and getattr(obj, f.name) == f.default)
        }
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def unshared(value: Any) -> Any:
    """A copy of plain YAML values in which every mapping and list is its own object.

    YAML anchors, aliases and merge keys (``<<:``) make several places of a parsed file share one object, so an
    override of one place would silently change the others; after this copy each place stands alone."""
    if isinstance(value, dict):
        return {key: unshared(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [unshared(item) for item in value]
    return value


def merged(base: Any, override: Any) -> Any:
    """``override`` laid over ``base``, mapping by mapping: keys it leaves out keep ``base``'s values. A mapping that
    names another plugin (a different ``name``) replaces ``base``'s wholesale, since the old keys belong to the old one."""
    if not (isinstance(base, dict) and isinstance(override, dict)):
        return unshared(override)
    if "name" in override and override["name"] != base.get("name"):
        return unshared(override)
    out = unshared(base)
    for key, value in override.items():
        out[key] = merged(base[key], value) if key in base else unshared(value)
    return out


def set_dotted(data: dict, dotted: str, value: Any) -> None:
    """Set ``a.b.0.c`` inside nested dicts/lists, creating mappings on the way."""
    parts = dotted.split(".")
    node: Any = data
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(".".join(parts[: i + 1]), f"list index out of range (the list has {len(node)} items)")
            if last:
                node[int(part)] = value
            else:
                node = node[int(part)]
        elif isinstance(node, dict):
            if last:
                node[part] = value
            else:
                if node.get(part) is None:
                    node[part] = {}
                node = node[part]
        else:
            raise ConfigError(".".join(parts[:i]), f"cannot set '{part}' inside the value {node!r}")


def parse_override(text: str) -> tuple[str, Any]:
    """``a.b=c`` → (``a.b``, YAML value of ``c``)."""
    if "=" not in text:
        raise ConfigError("--set", f"expected KEY=VALUE, got {text!r}")
    dotted, raw = text.split("=", 1)
    if not dotted.strip():
        raise ConfigError("--set", f"empty key in {text!r}")
    try:
        return dotted.strip(), yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as err:
        _, column, problem = yaml_syntax_error(err, raw)
        raise ConfigError("--set", f"{text!r}: the value is not valid YAML at column {column}: {problem}; quote it if it is meant as text") from None


def yaml_syntax_error(err: yaml.YAMLError, text: str) -> tuple[int, int, str]:
    """(line, column, problem) of a YAML syntax error in ``text``: 1-based, the problem on one line. PyYAML's own
    message spans five lines, quoting the source; this is for ``<file>:<line>:<column>: <problem>``."""
    if isinstance(err, yaml.MarkedYAMLError):
        mark = err.problem_mark or err.context_mark
        problem = " ".join((err.problem or err.context or "not valid YAML").split())
        if err.context and err.problem and len(err.context) <= 60:  # e.g. "while parsing a flow sequence"
            start = err.context_mark
            opened = f" that starts at {start.line + 1}:{start.column + 1}" if start and mark and start.line != mark.line else ""
            problem += f" ({err.context}{opened})"
        if "'\\t'" in problem:
            problem += "; indent with spaces, not tabs"
        return (mark.line + 1, mark.column + 1, problem) if mark else (1, 1, problem)
    if isinstance(err, yaml.reader.ReaderError) and isinstance(err.position, int):  # a character YAML does not allow
        before = text[: err.position]
        first = (str(err).splitlines() or ["not valid YAML"])[0]
        return before.count("\n") + 1, err.position - before.rfind("\n"), first
    return 1, 1, " ".join(str(err).split())


def positive(key: str, name: str, value: float | int | None, allow_zero: bool = False) -> None:
    if value is not None and (value < 0 or (value == 0 and not allow_zero)):
        raise ConfigError(_join(key, name), f"must be {'non-negative' if allow_zero else 'positive'}, got {value!r}")


def in_unit_interval(key: str, name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ConfigError(_join(key, name), f"must lie in [0, 1], got {value!r}")


def required(value: T | None, key: str) -> T:
    """``value``, or a ConfigError naming ``key`` when that section is missing."""
    if value is None:
        raise ConfigError(key, "this section is required here")
    return value
