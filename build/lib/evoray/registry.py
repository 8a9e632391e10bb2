"""Name-to-object registries filled by decorator, looked up by the names used in YAML."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from evoray.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """A named family of objects (search spaces, ops, searchers, ...).

    >>> OPS = Registry("op")
    >>> @OPS.register("identity")
    ... def identity(x): return x
    >>> OPS.get("identity")(3)
    3
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def add(obj: T) -> T:
            self.add(name, obj)
            return obj

        return add

    def add(self, name: str, obj: T) -> None:
        if name in self._items:
            raise KeyError(f"{self.kind} {name!r} is registered twice")
        self._items[name] = obj

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise ConfigError(f"unknown {self.kind} {name!r}; valid: {', '.join(sorted(self._items))}") from None

    def names(self) -> list[str]:
        return list(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)
