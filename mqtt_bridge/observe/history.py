"""The status page's history: the last hour of the bridge's numbers, kept in memory, bounded by construction.

Owns: the ring of samples (one every `interval_s`, `ceil(3600 / interval_s)` of them in a `deque(maxlen=...)`, so a
bridge that runs for years holds the same few hundred samples as one that started an hour ago), what a sample holds
(rates derived from the deltas of the `Stats` counters between two samples, the backlog gauges, the mean API latency
per interval, API errors folded into a fixed set of classes) and the sampling loop that `service.py` runs in a
thread of its own. Must not change the bridge's state; never holds topics, payloads or anything per message (every
key of a sample comes from a fixed set, whatever labels the counters carry).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from mqtt_bridge.model.values import JsonDict, JsonValue
from mqtt_bridge.observe.stats import HistogramSnapshot, Stats

__all__ = ["ERROR_CLASSES", "HISTORY_WINDOW_S", "LATENCY_OPERATIONS", "History", "HistorySample", "error_class"]

log = logging.getLogger(__name__)

HISTORY_WINDOW_S = 3600.0  # what the charts show: the last hour
# the API error classes a chart draws, in legend order: what a plant engineer does about each differs
ERROR_CLASSES = ("auth", "billing", "rate_limited", "server", "network", "rejected", "other")
# the operations whose latency is charted (`api_request_seconds{operation}`, timed by `metrics.TimedEventsApi`)
LATENCY_OPERATIONS = ("batch", "upload")
# dead-letter reasons that are the API refusing data (a 4xx on a batch or an upload): counted as API errors too
_REJECTED_REASONS = frozenset({"api_rejected", "upload_rejected"})


def error_class(status: str) -> str:
    """The class of an `api_retries{status}` label: auth, billing, rate_limited, server, network or other."""
    if status in ("401", "403"):
        return "auth"
    if status in ("402", "423"):
        return "billing"
    if status == "429":
        return "rate_limited"
    if status in ("network", "0", ""):
        return "network"
    if len(status) == 3 and status.startswith("5") and status.isdigit():
        return "server"
    return "other"


class GaugeView(Protocol):
    """The live numbers a sample reads besides the counters (a `ServiceState`)."""

    @property
    def buffer_depth(self) -> int: ...


class AgeView(Protocol):
    """The age of the oldest waiting event (`metrics.BufferGauges`)."""

    @property
    def oldest_age_s(self) -> float: ...


@dataclass(frozen=True, slots=True)
class HistorySample:
    """One point of every chart: the interval ending at `at_s` (Unix time) and the gauges read then."""

    at_s: float
    interval_s: float
    received_per_s: float
    delivered_per_s: float
    backlog_depth: int
    oldest_age_s: float
    dead_letters_per_min: float
    api_latency_ms: tuple[float | None, ...]  # mean per operation of LATENCY_OPERATIONS; None: no request
    api_errors_per_min: tuple[float, ...]  # per class of ERROR_CLASSES

    def to_json(self) -> JsonDict:
        """The sample as `/status/history.json` lists it."""
        return {
            "at": round(self.at_s, 3), "intervalS": round(self.interval_s, 3),
            "receivedPerS": round(self.received_per_s, 3), "deliveredPerS": round(self.delivered_per_s, 3),
            "backlogDepth": self.backlog_depth, "oldestAgeS": round(self.oldest_age_s, 3),
            "deadLettersPerMin": round(self.dead_letters_per_min, 3),
            "apiLatencyMs": {op: None if ms is None else round(ms, 3)
                             for op, ms in zip(LATENCY_OPERATIONS, self.api_latency_ms, strict=True)},
            "apiErrorsPerMin": {name: round(rate, 3)
                                for name, rate in zip(ERROR_CLASSES, self.api_errors_per_min, strict=True)},
        }


@dataclass(frozen=True, slots=True)
class _Totals:
    """The counter values a sample is the difference of, and when they were read (`time.monotonic`)."""

    clock_s: float
    received: int
    delivered: int
    dead_letters: int
    errors: tuple[int, ...]  # per class of ERROR_CLASSES
    latency: tuple[tuple[float, int], ...]  # (sum_s, count) per operation of LATENCY_OPERATIONS


def _totals(stats: Stats, clock_s: float) -> _Totals:
    received = delivered = dead = 0
    errors = dict.fromkeys(ERROR_CLASSES, 0)
    for (name, label), value in stats.counters().items():
        if name == "messages_received":
            received += value
        elif name == "events_delivered":
            delivered += value
        elif name == "dead_letters":
            dead += value
            if label in _REJECTED_REASONS:
                errors["rejected"] += value
        elif name == "api_retries":
            errors[error_class(label)] += value
    histograms = stats.histograms()
    empty = HistogramSnapshot((), 0.0, 0)
    latency = tuple((snap.sum, snap.count) for snap in
                    (histograms.get(("api_request_seconds", op), empty) for op in LATENCY_OPERATIONS))
    return _Totals(clock_s, received, delivered, dead, tuple(errors.values()), latency)


class History:
    """A fixed-size ring of `HistorySample`s, one taken every `interval_s` by `run` (or by calling `sample`)."""

    def __init__(self, stats: Stats, state: Callable[[], GaugeView], buffer: Callable[[], AgeView], *,
                 interval_s: float = 10.0, window_s: float = HISTORY_WINDOW_S) -> None:
        if not interval_s > 0:
            raise ValueError("interval_s must be positive")
        self._stats = stats
        self._state = state
        self._buffer = buffer
        self.interval_s = interval_s
        self.capacity = max(2, math.ceil(window_s / interval_s))
        self._lock = threading.Lock()
        self._samples: deque[HistorySample] = deque(maxlen=self.capacity)  # the bound: old samples fall out
        self._last: _Totals | None = None  # before the first sample: the counters' zero at the bridge's start

    def __len__(self) -> int:
        with self._lock:
            return len(self._samples)

    def samples(self) -> list[HistorySample]:
        """The samples held, oldest first."""
        with self._lock:
            return list(self._samples)

    def sample(self, now_s: float | None = None) -> HistorySample:
        """Take one sample now (Unix time `now_s`, for tests): rates since the previous one, gauges as they are.

        Intervals are measured on the monotonic clock (a stepped wall clock must not make a rate spike); the first
        one runs from the bridge's start (`Stats.started_at_s`), when every counter was zero.
        """
        clock_s = time.monotonic() if now_s is None else now_s
        now_s = time.time() if now_s is None else now_s
        current = _totals(self._stats, clock_s)
        depth = self._state().buffer_depth
        oldest_age_s = self._buffer().oldest_age_s
        with self._lock:
            before, self._last = self._last, current
            if before is None:
                elapsed_s = now_s - self._stats.started_at_s
                before = _Totals(clock_s, 0, 0, 0, (0,) * len(ERROR_CLASSES), ((0.0, 0),) * len(LATENCY_OPERATIONS))
            else:
                elapsed_s = clock_s - before.clock_s
            elapsed_s = max(elapsed_s, 1e-3)

            def per_s(after: int, earlier: int) -> float:
                return max(0, after - earlier) / elapsed_s

            latency: list[float | None] = []
            for (sum_s, count), (sum_before_s, count_before) in zip(current.latency, before.latency, strict=True):
                requests = count - count_before
                latency.append(max(0.0, sum_s - sum_before_s) / requests * 1000.0 if requests > 0 else None)
            sample = HistorySample(
                at_s=now_s, interval_s=elapsed_s,
                received_per_s=per_s(current.received, before.received),
                delivered_per_s=per_s(current.delivered, before.delivered),
                backlog_depth=depth, oldest_age_s=oldest_age_s,
                dead_letters_per_min=per_s(current.dead_letters, before.dead_letters) * 60.0,
                api_latency_ms=tuple(latency),
                api_errors_per_min=tuple(per_s(a, b) * 60.0 for a, b in zip(current.errors, before.errors,
                                                                          strict=True)))
            self._samples.append(sample)
        return sample

    def to_json(self) -> JsonDict:
        """The `/status/history.json` document: the interval, the ring's size and the samples, oldest first."""
        samples: list[JsonValue] = [s.to_json() for s in self.samples()]
        return {"intervalS": self.interval_s, "capacity": self.capacity, "windowS": HISTORY_WINDOW_S,
                "errorClasses": list(ERROR_CLASSES), "latencyOperations": list(LATENCY_OPERATIONS),
                "samples": samples}

    def run(self, stop: threading.Event) -> None:
        """Sample every `interval_s` until `stop` is set. A failed sample is logged and skipped, never fatal."""
        log.debug("history sampling started interval_s=%.1f capacity=%d", self.interval_s, self.capacity)
        next_at = time.monotonic() + self.interval_s
        while not stop.wait(max(0.0, next_at - time.monotonic())):
            next_at += self.interval_s
            if next_at < time.monotonic():  # the machine was suspended or starved: do not catch up in a burst
                next_at = time.monotonic() + self.interval_s
            try:
                self.sample()
            except Exception:  # a thread loop's edge: the charts miss one point, the bridge goes on
                log.warning("history sample failed", exc_info=True)
                self._stats.add("history_sample_errors")
