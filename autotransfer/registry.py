"""Named registries of sources, strategies and estimators, each item tagged with its provider."""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from .console import warn
from .errors import AutotransferError

T = TypeVar("T")


@dataclass(frozen=True)
class Provider:
    """Who registered an item."""

    plugin: str  # plugin name: entry-point name, or file stem for --plugins-dir plugins
    distribution: str  # installed distribution name, or the .py file path for --plugins-dir
    version: str  # distribution version; "" for a plain file

    def __str__(self) -> str:
        return f"{self.distribution} {self.version}".strip()


BUILTIN = Provider("builtin", "autotransfer", "")


class Registry(Generic[T]):
    """Items by name. A clash keeps the first under the bare name and adds ``plugin:name``."""

    def __init__(self, kind: str):
        self.kind = kind  # "source", "strategy" or "estimator"
        self._items: dict[str, T] = {}
        self._providers: dict[str, Provider] = {}

    def add(self, item: T, provider: Provider) -> str:
        name = getattr(item, "name", None)
        if not isinstance(name, str) or not name:
            raise AutotransferError(
                f"plugin {provider.plugin!r} registered a {self.kind} without a name "
                f"({item!r}); expected an object with a non-empty str .name"
            )
        try:
            item.provider = provider  # type: ignore[attr-defined]
        except Exception:  # frozen objects keep provider in the side table only
            pass
        key = name
        if name in self._items:
            key = f"{provider.plugin}:{name}"
            warn(
                f"{self.kind} {name!r} from plugin {provider.plugin!r} clashes with the one from "
                f"{self._providers[name].plugin!r}; the later one is available as {key!r}"
            )
        self._items[key] = item
        self._providers[key] = provider
        return key

    def get(self, name: str) -> T:
        if name in self._items:
            return self._items[name]
        close = difflib.get_close_matches(name, list(self._items), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        known = ", ".join(sorted(self._items)) or "none"
        raise AutotransferError(
            f"unknown {self.kind} {name!r}{hint} (registered: {known}); "
            f"run 'autotransfer {self.kind}s' to list them or install the plugin that provides it"
        )

    def provider_of(self, name: str) -> Provider:
        return self._providers[name]

    def names(self) -> list[str]:
        return list(self._items)

    def items(self) -> Iterator[tuple[str, T]]:
        return iter(list(self._items.items()))

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()!r})"


def describe(item: Any) -> dict[str, Any]:
    """Plain-data description of a registered item for listings (uses ``item.describe()`` if any)."""
    if hasattr(item, "describe"):
        return dict(item.describe())
    return {"name": getattr(item, "name", repr(item))}
