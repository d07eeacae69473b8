"""Saying a failed connect in one clear line, without flooding the log (issue 13 item 1).

Owns: the `mqtt connect failed` line (host:port, protocol, cause, the next retry delay, what to check), its rate
limit (the first; then once per backoff step while the delay grows, else at most once a minute with the number of
repeats it held back), the current problem text that `/readyz`, the status page and `mqtt-bridge status` show, and
the hook that counts each failure by cause. Thread-safe; no paho here (the subscriber feeds it).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from mqtt_bridge.mqtt.diagnosis import ConnectCause, Diagnosis, Endpoint

__all__ = ["ConnectReport", "RepeatLimiter"]

log = logging.getLogger(__name__)

# A takeover is said while connected too: keep it on the page until a connection has lasted this long.
_STABLE_AFTER_S = 60.0


class RepeatLimiter:
    """Decides which repeats of the same cause are logged: a new cause, a longer retry delay, or a minute passed."""

    def __init__(self, every_s: float = 60.0) -> None:
        self._every_s = every_s
        self._cause: ConnectCause | None = None
        self._retry_s = 0.0
        self._logged_at = 0.0
        self._held = 0

    def admit(self, cause: ConnectCause, retry_s: float, now: float) -> int | None:
        """None to stay quiet; else how many repeats of this cause were held back since its last line."""
        if cause == self._cause and retry_s <= self._retry_s and now - self._logged_at < self._every_s:
            self._held += 1
            return None
        held = self._held if cause == self._cause else 0
        self._cause, self._retry_s, self._logged_at, self._held = cause, retry_s, now, 0
        return held


class ConnectReport:
    """The subscriber's voice for connect failures, and the problem the bridge shows until it is fixed."""

    def __init__(self, endpoint: Endpoint, on_failure: Callable[[str], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.endpoint = endpoint
        self._on_failure = on_failure
        self._clock = clock
        self._limiter = RepeatLimiter()
        self._lock = threading.Lock()
        self._problem = ""
        self._problem_cause: ConnectCause | None = None
        self._connected_at: float | None = None
        self.failures = 0

    def failed(self, diagnosis: Diagnosis, protocol: str, retry_s: float) -> None:
        """One failed attempt (or lost session): count it, remember it, and log it unless rate-limited."""
        text = diagnosis.describe(self.endpoint, protocol)
        with self._lock:
            self.failures += 1
            self._problem, self._problem_cause = text, diagnosis.cause
            held = self._limiter.admit(diagnosis.cause, retry_s, self._clock())
        if self._on_failure is not None:
            try:
                self._on_failure(diagnosis.cause.value)
            except Exception:  # a metrics hook must not break the network thread
                log.exception("mqtt connect failure hook failed")
        if held is None:
            return
        repeats = f" repeated={held}" if held else ""
        log.warning("mqtt connect failed host=%s port=%d protocol=%s cause=%s retry_in_s=%d%s: %s; check %s",
                    self.endpoint.host, self.endpoint.port, protocol, diagnosis.cause.value, round(retry_s), repeats,
                    diagnosis.what, diagnosis.check)

    def connected(self) -> None:
        """The broker accepted a connection: the problem is gone (a takeover stays until the connection lasts)."""
        with self._lock:
            self._connected_at = self._clock()
            if self._problem_cause != ConnectCause.TAKEN_OVER:
                self._problem, self._problem_cause = "", None

    def disconnected(self) -> None:
        """The connection ended (whatever the reason; `failed` says it when there is one)."""
        with self._lock:
            self._connected_at = None

    @property
    def problem(self) -> str:
        """The last failure in words, or "" when the connection works."""
        with self._lock:
            if (self._problem_cause == ConnectCause.TAKEN_OVER and self._connected_at is not None
                    and self._clock() - self._connected_at >= _STABLE_AFTER_S):
                self._problem, self._problem_cause = "", None
            return self._problem
