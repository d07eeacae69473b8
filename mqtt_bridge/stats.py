"""In-process counters and gauges of the bridge (what the status line, /metrics and the tests read).

Owns: thread-safe counting with labels. Must not know about HTTP or Prometheus formatting.
"""

from __future__ import annotations

import threading
import time
from collections import Counter

__all__ = ["Stats"]


class Stats:
    """Counters keyed by `(name, label)`, plus a few gauges. Cheap to update from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters: Counter[tuple[str, str]] = Counter()
        self._gauges: dict[str, float] = {}
        self.started_at_s = time.time()

    def add(self, name: str, amount: int = 1, label: str = "") -> None:
        """Increase counter `name{label}` by `amount`."""
        with self._lock:
            self._counters[(name, label)] += amount

    def set(self, name: str, value: float) -> None:
        """Set gauge `name`."""
        with self._lock:
            self._gauges[name] = value

    def count(self, name: str, label: str | None = None) -> int:
        """Current value of a counter; with `label=None`, the sum over all labels."""
        with self._lock:
            if label is not None:
                return self._counters[(name, label)]
            return sum(v for (n, _), v in self._counters.items() if n == name)

    def gauge(self, name: str, default: float = 0.0) -> float:
        """Current value of a gauge."""
        with self._lock:
            return self._gauges.get(name, default)

    def snapshot(self) -> dict[str, dict[str, float]]:
        """Every counter (by name, then label) and gauge, for status output."""
        with self._lock:
            out: dict[str, dict[str, float]] = {}
            for (name, label), value in self._counters.items():
                out.setdefault(name, {})[label] = value
            for name, gauge in self._gauges.items():
                out.setdefault(name, {})[""] = gauge
            return out
