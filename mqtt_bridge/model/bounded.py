"""Memory bounds in bytes: the least-recently-used map every in-memory cache and table of the bridge is kept in.

Owns: `ByteLRU` (a thread-safe map bounded by accounted bytes and by entries, oldest used first out), the byte
accounting of keys and values (`text_bytes`), and the process-wide tally of evictions per cache name, which
`observe.metrics` exports as `mqtt_bridge_cache_evictions_total{cache}` (the decoders and the router cannot import
`observe`, so they count here). Accounted bytes are the payload bytes plus a fixed overhead per entry: an estimate
of the Python objects behind them, high enough that the accounted total bounds the real memory within a small
factor (tests/unit/model/test_bounded.py floods each cache and checks RSS).

The tally is per process: several bridges in one process (only in tests) add to the same counters.
"""

from __future__ import annotations

import threading
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

__all__ = ["CACHE_NAMES", "ENTRY_OVERHEAD_BYTES", "ByteLRU", "count_evictions", "eviction_counts", "text_bytes"]

K = TypeVar("K")
V = TypeVar("V")

# every cache counted here, so that /metrics shows each one from the start (0 evictions)
CACHE_NAMES = ("trace", "route", "image_topics", "sparkplug_nodes", "sparkplug_aliases", "frigate_snapshots",
               "frigate_ids", "debounce")
ENTRY_OVERHEAD_BYTES = 200  # dict slot, key and value objects, OrderedDict links: a generous estimate

_tally_lock = threading.Lock()
_tally: Counter[str] = Counter()


def count_evictions(cache: str, amount: int = 1) -> None:
    """Add `amount` evictions to the process-wide tally of `cache`."""
    if amount:
        with _tally_lock:
            _tally[cache] += amount


def eviction_counts() -> dict[str, int]:
    """Evictions so far by cache name (for /metrics)."""
    with _tally_lock:
        return dict(_tally)


def text_bytes(*parts: str | bytes | None) -> int:
    """Accounted bytes of some strings or bytes (a str counts 1 byte a character: CPython's compact ASCII)."""
    return sum(len(part) for part in parts if part is not None)


class ByteLRU(Generic[K, V]):
    """A map of at most `max_entries` entries and `max_bytes` accounted bytes; putting past either bound evicts the
    least recently used entries (counted under `name`). An entry larger than `max_bytes` on its own is not kept.

    `size(key, value)` gives an entry's payload bytes (`ENTRY_OVERHEAD_BYTES` is added). Thread-safe.
    """

    def __init__(self, name: str, max_bytes: int, size: Callable[[K, V], int], max_entries: int | None = None,
                 on_evict: Callable[[K, V], None] | None = None) -> None:
        self.name = name
        self.max_bytes = max_bytes
        self.max_entries = max_entries
        self._size = size
        self._on_evict = on_evict
        self._lock = threading.Lock()
        self._entries: OrderedDict[K, tuple[V, int]] = OrderedDict()
        self._bytes = 0
        self.evictions = 0

    @property
    def bytes(self) -> int:
        """Accounted bytes held now (never above `max_bytes`)."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._entries

    def get(self, key: K, default: V | None = None) -> V | None:
        """The value under `key` (marked recently used), or `default`."""
        with self._lock:
            hit = self._entries.get(key)
            if hit is None:
                return default
            self._entries.move_to_end(key)
            return hit[0]

    def put(self, key: K, value: V) -> bool:
        """Keep `value` under `key` as the most recently used entry, evicting as needed; False when it is too big
        to be kept at all (then any older value under `key` is dropped too)."""
        cost = self._size(key, value) + ENTRY_OVERHEAD_BYTES
        evicted: list[tuple[K, V]] = []
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= old[1]
            if cost > self.max_bytes:
                kept = False
            else:
                self._entries[key] = (value, cost)
                self._bytes += cost
                kept = True
            while self._entries and (self._bytes > self.max_bytes
                                     or (self.max_entries is not None and len(self._entries) > self.max_entries)):
                old_key, (old_value, old_cost) = self._entries.popitem(last=False)
                self._bytes -= old_cost
                evicted.append((old_key, old_value))
            self.evictions += len(evicted) + (not kept)
        count_evictions(self.name, len(evicted) + (not kept))
        if self._on_evict is not None:
            for old_key, old_value in evicted:
                self._on_evict(old_key, old_value)
        return kept

    def resize(self, key: K) -> None:
        """Re-account `key` after its (mutable) value changed; may evict others, or it when alone too big."""
        with self._lock:
            hit = self._entries.get(key)
        if hit is not None:
            self.put(key, hit[0])

    def pop(self, key: K) -> V | None:
        """Remove and return the value under `key` (not counted as an eviction)."""
        with self._lock:
            hit = self._entries.pop(key, None)
            if hit is None:
                return None
            self._bytes -= hit[1]
            return hit[0]

    def clear(self) -> None:
        """Forget everything (not counted as evictions)."""
        with self._lock:
            self._entries.clear()
            self._bytes = 0

    def values(self) -> Iterator[V]:
        """The values, most recently used last (a snapshot: safe while others put)."""
        with self._lock:
            snapshot = [value for value, _ in self._entries.values()]
        return iter(snapshot)
