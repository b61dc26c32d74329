"""A memo with a bound, for the process-wide caches that have no run to own them.

A notebook keeps one process alive for days; a memo that only grows would hold every weights
file, cached array and source it ever saw. ``BoundedMemo`` keeps the most recently used entries
only, like ``functools.lru_cache``, for values whose key is computed before the call (a file's
path, size and mtime) or whose making needs an object that is no part of the key (a source).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

V = TypeVar("V")


class BoundedMemo(Generic[V]):
    """Values by key, at most ``size`` of them; the least recently used goes first."""

    def __init__(self, size: int):
        if size < 1:
            raise ValueError(f"size must be at least 1, but got {size=}")
        self.size = size
        self._items: OrderedDict[Hashable, V] = OrderedDict()

    def get(self, key: Hashable, make: Callable[[], V]) -> V:
        """The value kept for ``key``, else ``make()`` kept for it (nothing is kept when ``make`` raises)."""
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key]
        value = make()
        self._items[key] = value
        if len(self._items) > self.size:
            self._items.popitem(last=False)
        return value

    def clear(self) -> None:
        self._items.clear()

    def __len__(self) -> int:
        return len(self._items)
