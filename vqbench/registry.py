"""Named registries that plugins fill through hooks (tokenizers, priors, backbones, ...)."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from .errors import UnknownNameError

T = TypeVar("T")


def did_you_mean(name: str, choices: list[str]) -> str:
    """' — did you mean 'x'?' for the closest choice, or '' when nothing is close."""
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.5)
    return f" — did you mean '{close[0]}'?" if close else ""


class Registry(Generic[T]):
    """A name → class mapping that refuses duplicates and classes not implementing the kind's interface, and
    suggests names on a typo."""

    def __init__(self, kind: str, interface: type | tuple[type, ...] | None = None):
        self.kind = kind
        self.interface = interface
        self._entries: dict[str, T] = {}
        self._origins: dict[str, str] = {}

    def check(self, name: str, entry: Any, origin: str = "") -> None:
        """Refuse an entry that is not a concrete subclass of the registry's interface."""
        if self.interface is None:
            return
        wanted = " or ".join(t.__name__ for t in (self.interface if isinstance(self.interface, tuple) else (self.interface,)))
        where = f" (registered by {origin})" if origin else ""
        if not (isinstance(entry, type) and issubclass(entry, self.interface)):
            raise TypeError(f"{self.kind} '{name}'{where} must be a subclass of vqbench.interfaces.{wanted}, got {entry!r}")
        missing = sorted(getattr(entry, "__abstractmethods__", ()))
        if missing:
            raise TypeError(f"{self.kind} '{name}'{where} does not implement {', '.join(missing)} of {wanted}")

    def register(self, name: str, entry: T, origin: str = "") -> T:
        if not isinstance(name, str) or not name:
            raise ValueError(f"{self.kind} names must be non-empty strings, got {name!r}")
        self.check(name, entry, origin)
        if name in self._entries:
            raise ValueError(
                f"{self.kind} '{name}' is registered twice (first by {self._origins[name] or '?'}, again by {origin or '?'}); rename one of them"
            )
        self._entries[name] = entry
        self._origins[name] = origin
        return entry

    def decorator(self, name: str, origin: str = "") -> Callable[[T], T]:
        return lambda entry: self.register(name, entry, origin)

    def get(self, name: str, key: str = "") -> T:
        if name not in self._entries:
            known = sorted(self._entries)
            raise UnknownNameError(
                key or self.kind,
                f"unknown {self.kind} '{name}'{did_you_mean(str(name), known)} (known: {', '.join(known) or 'none'}; `vqbench list` shows all)",
            )
        return self._entries[name]

    def origin(self, name: str) -> str:
        return self._origins.get(name, "")

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def items(self) -> list[tuple[str, Any]]:
        return [(n, self._entries[n]) for n in self.names()]
