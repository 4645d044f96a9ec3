"""A mapping bounded to its most recently used entries, for state made per key of an unbounded stream.

A node sees frames under ever new keys (stamps, frame sizes); whatever it
keeps per key must not grow with the stream. The least recently used entry
goes first, and ``on_evict`` sees every entry that goes, so an entry that
must not be dropped mid-use (a staging buffer with a copy in flight) can
wait, and one whose counts matter can hand them on.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator, ValuesView
from typing import Generic, TypeVar

Key = TypeVar("Key", bound=Hashable)
Value = TypeVar("Value")


def _keep(value: object) -> None:
    """The default ``on_evict``: an entry that goes needs nothing done."""


class LRU(Generic[Key, Value]):
    """At most ``capacity`` (>= 0) entries, iterated least recently used first; values are never None
    (``get`` answers None for a missing key)."""

    def __init__(self, capacity: int, on_evict: Callable[[Value], None] = _keep) -> None:
        self.capacity = capacity
        self.on_evict = on_evict
        self._entries: OrderedDict[Key, Value] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[Key]:
        return iter(self._entries)

    def values(self) -> ValuesView[Value]:
        return self._entries.values()

    def get(self, key: Key) -> Value | None:
        """The entry, now the most recently used, or None."""
        if key not in self._entries:
            return None
        self._entries.move_to_end(key)
        return self._entries[key]

    def put(self, key: Key, value: Value) -> None:
        """Keep the entry as the most recently used, evicting the least recently used beyond capacity (and
        the key's former value, if another)."""
        former = self._entries.get(key)
        if former is not None and former is not value:
            self.on_evict(former)
        self._entries[key] = value
        self._entries.move_to_end(key)
        while len(self._entries) > self.capacity:
            self.on_evict(self._entries.popitem(last=False)[1])

    def get_or_make(self, key: Key, make: Callable[[], Value]) -> Value:
        """The entry, made and kept if missing; either way now the most recently used."""
        value = self.get(key)
        if value is None:
            value = make()
            self.put(key, value)
        return value

    def clear(self) -> None:
        """Evict every entry (through ``on_evict``, as when over capacity)."""
        while self._entries:
            self.on_evict(self._entries.popitem(last=False)[1])
