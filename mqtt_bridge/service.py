"""The composition root: builds the bridge from a config, runs its threads, and shuts it down in order.

Owns: wiring (router, ingestor, buffer, API client, subscriber, intake, flusher), the one stop event, the
watchdog (any thread that dies stops everything with a non-zero exit), signals, and the ordered shutdown:
stop intake (commit and ack what was received) → disconnect MQTT (the session stays) → let the flusher finish
the batch in flight → close the buffer. Nothing else in the package starts threads for the bridge.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType

from mqtt_bridge.api import VisionEventsClient
from mqtt_bridge.buffer import DiskBuffer
from mqtt_bridge.config import BridgeConfig
from mqtt_bridge.flusher import Flusher, FlushSettings
from mqtt_bridge.health import HealthServer
from mqtt_bridge.ingest import Ingestor
from mqtt_bridge.intake import Intake
from mqtt_bridge.routing import Router
from mqtt_bridge.stats import Stats
from mqtt_bridge.subscriber import Inbound, MqttSubscriber

__all__ = ["Service", "ServiceState"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ServiceState:
    """A point-in-time view for health checks and status output."""

    is_alive: bool
    is_ready: bool
    mqtt_connected: bool
    mqtt_subscribed: bool
    api_ready: bool
    buffer_writable: bool
    backpressured: bool
    buffer_depth: int
    dead_letters: int
    last_error: str


class Service:
    """One running bridge. `start()` then `wait()`; or `run()` for both plus signal handling."""

    def __init__(self, config: BridgeConfig) -> None:
        self.config = config
        self.stats = Stats()
        self.stop_event = threading.Event()
        self._fatal: str | None = None
        self._router = Router(list(config.routes))
        self._buffer = DiskBuffer(config.buffer.path, config.buffer.max_bytes, config.buffer.min_free_bytes)
        self._wake = threading.Event()
        self._threads: list[threading.Thread] = []
        self._api: VisionEventsClient | None = None
        self._subscriber: MqttSubscriber | None = None
        self._intake: Intake | None = None
        self._flusher: Flusher | None = None
        self._flusher_stop = threading.Event()
        self._health: HealthServer | None = None
        self._stopped = False

    @property
    def health_port(self) -> int | None:
        """Port of the health server, when enabled."""
        return self._health.port if self._health is not None else None

    @property
    def buffer(self) -> DiskBuffer:
        """The disk buffer (open between `start` and `shutdown`)."""
        return self._buffer

    def fail(self, reason: str) -> None:
        """Stop everything because a part died; the process exits non-zero."""
        if self._fatal is None:
            self._fatal = reason
            log.error("fatal: %s; stopping", reason)
        self.stop_event.set()

    def start(self) -> None:
        """Open the buffer, then start flusher, intake and MQTT. Raises BufferError_ if the buffer is unusable."""
        config = self.config
        self._buffer.open()
        try:
            self._api = VisionEventsClient(config.api.base_url, config.api.api_key_value,
                                           config.api.connect_timeout_s, config.api.read_timeout_s)
            self._flusher = Flusher(
                self._buffer, self._api,
                FlushSettings(config.flush.max_events, config.flush.max_bytes, config.flush.max_wait_s,
                              config.api.retry_min_s, config.api.retry_max_s),
                self.stats, self._flusher_stop, self._wake, on_auth_error=self._api.refresh_key)
            ingestor = Ingestor(self._router, config.mqtt.max_payload_bytes)
            self._subscriber = MqttSubscriber(config.mqtt, self._router.subscriptions(), self._offer, self.fail)
            self._intake = Intake(ingestor, self._buffer, self._subscriber.ack, self.stats, self.stop_event,
                                  self._wake, max_pending=max(2 * config.mqtt.receive_maximum, 1000))
        except Exception:
            self._buffer.close()
            raise
        if config.health.enabled:
            self._health = HealthServer(config.health.host, config.health.port, self.state, self.stats)
            self._health.start()
        self._spawn("flusher", self._flusher.run)
        self._spawn("intake", self._intake.run)
        self._subscriber.start()
        log.info("bridge started routes=%d subscriptions=%s buffer=%s depth=%d", len(self._router.routes),
                 ",".join(self._router.subscriptions()), config.buffer.path, self._buffer.depth)

    def _offer(self, message: Inbound) -> None:
        assert self._intake is not None
        self._intake.offer(message)

    def _spawn(self, name: str, target: Callable[[], None]) -> None:
        def body() -> None:
            try:
                target()
            except BaseException as exc:
                log.exception("thread %s died", name)
                self.fail(f"thread {name} died: {exc!r}")

        thread = threading.Thread(target=body, name=name, daemon=False)
        thread.start()
        self._threads.append(thread)

    def state(self) -> ServiceState:
        """Current health, for /healthz, /readyz and status output."""
        alive = all(t.is_alive() for t in self._threads) and bool(self._subscriber and self._subscriber.is_alive())
        mqtt_ok = bool(self._subscriber and self._subscriber.is_connected)
        api_ok = bool(self._flusher and self._flusher.is_api_ready)
        writable = bool(self._intake and self._intake.is_writable)
        backpressured = bool(self._intake and self._intake.is_backpressured)
        return ServiceState(
            is_alive=alive and not self.stop_event.is_set(),
            is_ready=alive and mqtt_ok and api_ok and writable and not backpressured,
            mqtt_connected=mqtt_ok, mqtt_subscribed=bool(self._subscriber and self._subscriber.is_subscribed),
            api_ready=api_ok, buffer_writable=writable, backpressured=backpressured,
            buffer_depth=self._buffer.depth, dead_letters=self._buffer.dead_letter_count,
            last_error=self._fatal or (self._flusher.last_error if self._flusher else ""),
        )

    def wait(self, status_interval_s: float = 60.0) -> None:
        """Block until stopped, watching the threads (a dead thread stops the bridge)."""
        next_status = time.monotonic() + status_interval_s
        while not self.stop_event.wait(1.0):
            if self._subscriber is not None and not self._subscriber.is_alive():
                self.fail("mqtt network thread is gone")
            for thread in self._threads:
                if not thread.is_alive():
                    self.fail(f"thread {thread.name} is gone")
            if time.monotonic() >= next_status:
                next_status += status_interval_s
                state = self.state()
                log.info("status mqtt_connected=%s api_ready=%s depth=%d delivered=%d dead_letters=%d",
                         state.mqtt_connected, state.api_ready, state.buffer_depth,
                         self.stats.count("events_delivered"), state.dead_letters)

    def shutdown(self) -> int:
        """Ordered shutdown under one deadline. Returns the exit code (0 clean, 1 after a fatal error)."""
        if self._stopped:
            return 0 if self._fatal is None else 1
        self._stopped = True
        self.stop_event.set()
        deadline = time.monotonic() + self.config.flush.shutdown_grace_s + 5.0
        log.info("shutdown: stopping intake")
        for thread in self._threads:
            if thread.name == "intake":
                thread.join(max(0.1, deadline - time.monotonic()))
        if self._subscriber is not None:
            log.info("shutdown: disconnecting mqtt")
            self._subscriber.stop(timeout_s=max(0.1, min(5.0, deadline - time.monotonic())))
        log.info("shutdown: finishing the batch in flight")
        self._flusher_stop.set()
        self._wake.set()
        for thread in self._threads:
            if thread.name == "flusher":
                thread.join(max(0.1, deadline - time.monotonic()))
                if thread.is_alive():
                    log.warning("flusher still busy at the deadline; its batch stays buffered")
        if self._api is not None:
            self._api.close()
        if self._health is not None:
            self._health.stop()
        if not any(t.is_alive() for t in self._threads):
            self._buffer.close()
        log.info("shutdown complete depth=%d delivered=%d dead_letters=%d", self._buffer.depth,
                 self.stats.count("events_delivered"), self._buffer.dead_letter_count)
        return 0 if self._fatal is None else 1

    def run(self) -> int:
        """Start, wait for SIGTERM/SIGINT or a fatal error, shut down; returns the exit code."""

        def on_signal(signum: int, frame: FrameType | None) -> None:
            log.info("signal %s received; stopping", signal.Signals(signum).name)
            self.stop_event.set()

        previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            self.start()
            self.wait()
        finally:
            code = self.shutdown()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return code
