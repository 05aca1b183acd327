"""Named registries that plugins fill through hooks (tokenizers, priors, backbones, ...)."""
from __future__ import annotations

import difflib
from typing import Any, Callable, Generic, Iterator, TypeVar

from .errors import UnknownNameError

T = TypeVar("T")


def did_you_mean(name: str, choices: list[str]) -> str:
    """' — did you mean 'x'?' for the closest choice, or '' when nothing is close."""
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.5)
    return f" — did you mean '{close[0]}'?" if close else ""


class Registry(Generic[T]):
    """A name → factory mapping that refuses duplicates and suggests names on a typo."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._origins: dict[str, str] = {}

    def register(self, name: str, entry: T, origin: str = "") -> T:
        if not isinstance(name, str) or not name:
            raise ValueError(f"{self.kind} names must be non-empty strings, got {name!r}")
        if name in self._entries:
            raise ValueError(
                f"{self.kind} '{name}' is registered twice (first by {self._origins[name] or '?'}, "
                f"again by {origin or '?'}); rename one of them"
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
                f"unknown {self.kind} '{name}'{did_you_mean(str(name), known)} "
                f"(known: {', '.join(known) or 'none'}; `vqbench list` shows all)",
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
