"""What the emulator has been asked: the request log and per-route status counts, for tests and the control API.

Owns: `RequestRecord`, and `RequestLog` (the last 10 000 API requests with their status, and counts by route and
status). Control API requests (`/_emulator/...`) are never recorded. Thread-safe.
"""

from __future__ import annotations

import threading
from collections import Counter, deque
from dataclasses import dataclass

from .values import JsonDict

__all__ = ["RequestLog", "RequestRecord"]

_LOG_SIZE = 10_000


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One API request as the emulator saw it. `at_s` is `time.monotonic()` at arrival; status 0 = reset."""

    method: str
    path: str
    status: int
    at_s: float

    def to_json(self) -> JsonDict:
        """Render for `GET /_emulator/requests`."""
        return {"method": self.method, "path": self.path, "status": self.status, "at_s": self.at_s}


class RequestLog:
    """The request log and status counts. Thread-safe."""

    def __init__(self) -> None:
        """Start empty."""
        self._lock = threading.Lock()
        self._log: deque[RequestRecord] = deque(maxlen=_LOG_SIZE)
        self._stats: Counter[tuple[str, int]] = Counter()

    def record(self, method: str, path: str, status: int, at_s: float) -> None:
        """Remember one answered request (control API requests are skipped)."""
        if path.startswith("/_emulator/"):
            return
        with self._lock:
            self._log.append(RequestRecord(method, path, status, at_s))
            shown = "/images/*" if path.startswith("/images/") else path
            self._stats[(f"{method} {shown}", status)] += 1

    def records(self) -> list[RequestRecord]:
        """Every recorded request, oldest first."""
        with self._lock:
            return list(self._log)

    def stats(self) -> dict[str, dict[str, int]]:
        """Request counts as `{"METHOD /path": {"status": count}}`."""
        with self._lock:
            result: dict[str, dict[str, int]] = {}
            for (key, status), count in sorted(self._stats.items()):
                result.setdefault(key, {})[str(status)] = count
            return result

    def clear(self) -> None:
        """Forget every record and count."""
        with self._lock:
            self._log.clear()
            self._stats.clear()
