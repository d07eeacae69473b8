"""In-process counters, gauges and latency histograms of the bridge (what the status line, /metrics, the status
page and the tests read).

Owns: thread-safe counting with labels. Must not know about HTTP or Prometheus formatting (`metrics.py` exports
these values; the hot path only touches a lock and a dict here).
"""

from __future__ import annotations

import threading
import time
from bisect import bisect_left
from collections import Counter
from dataclasses import dataclass

__all__ = ["LATENCY_BUCKETS_S", "HistogramSnapshot", "Stats"]

# Upper bounds (seconds) of the latency histogram buckets: from a local emulator (ms) to a slow upload (s).
LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


@dataclass(frozen=True, slots=True)
class HistogramSnapshot:
    """One histogram: non-cumulative counts per bucket of `LATENCY_BUCKETS_S` (+ one for +Inf), sum and count."""

    counts: tuple[int, ...]
    sum: float
    count: int


class Stats:
    """Counters keyed by `(name, label)`, plus a few gauges. Cheap to update from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters: Counter[tuple[str, str]] = Counter()
        self._gauges: dict[str, float] = {}
        self._histograms: dict[tuple[str, str], tuple[list[int], list[float]]] = {}
        self._sources: dict[str, Counter[tuple[str, str]]] = {}  # another process's counters, as it last reported
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

    def observe(self, name: str, value: float, label: str = "") -> None:
        """Record one observation (e.g. a request duration in seconds) in histogram `name{label}`."""
        index = bisect_left(LATENCY_BUCKETS_S, value)
        with self._lock:
            entry = self._histograms.get((name, label))
            if entry is None:
                entry = self._histograms[(name, label)] = ([0] * (len(LATENCY_BUCKETS_S) + 1), [0.0])
            entry[0][index] += 1
            entry[1][0] += value

    def histograms(self) -> dict[tuple[str, str], HistogramSnapshot]:
        """Every histogram by `(name, label)`."""
        with self._lock:
            return {key: HistogramSnapshot(tuple(counts), total[0], sum(counts))
                    for key, (counts, total) in self._histograms.items()}

    def counters(self) -> dict[tuple[str, str], int]:
        """Every counter by `(name, label)`."""
        with self._lock:
            return dict(self._counters)

    def gauges(self) -> dict[str, float]:
        """Every gauge by name."""
        with self._lock:
            return dict(self._gauges)

    def snapshot(self) -> dict[str, dict[str, float]]:
        """Every counter (by name, then label) and gauge, for status output."""
        with self._lock:
            out: dict[str, dict[str, float]] = {}
            for (name, label), value in self._counters.items():
                out.setdefault(name, {})[label] = value
            for name, gauge in self._gauges.items():
                out.setdefault(name, {})[""] = gauge
            return out

    def absorb(self, source: str, counters: dict[tuple[str, str], int], gauges: dict[str, float]) -> None:
        """Count another process's numbers in (the receiver process's, `supervise`): `counters` are its totals as
        it reports them now (they replace what `source` reported before), `gauges` overwrite these. A restarted
        process reports as a new `source`, so that what its predecessor counted stays counted."""
        with self._lock:
            previous = self._sources.get(source)
            if previous is not None:
                self._counters.subtract(previous)
            self._counters.update(counters)
            self._sources[source] = Counter(counters)
            self._gauges.update(gauges)
