"""The composition root: builds the bridge from a config, runs its threads, and shuts it down in order.

Owns: wiring (router, ingestor, buffer and its raw log, API client, subscriber, receiver, processor, image
references, flusher, and the outcome hooks that trace, receipts and the ledger hear them through). It wires; it
does not relay: the receiver logs each raw message and acks it (design §3), the processor turns the raw log into
events (there `Inbound.ack` means "this raw entry is finished"). Also the one stop event, the watchdog (a thread
that dies stops everything, non-zero exit), signals, and the ordered shutdown under one deadline: receiver (commit,
ack) → MQTT disconnect (the session stays) → processor (what it does not reach stays in the raw log) → the flusher's
batch in flight → receipts and ledger → close the buffer. Nothing else in the package starts threads for the bridge.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType

from mqtt_bridge.api.client import VisionEventsClient
from mqtt_bridge.api.usecases import check_use_cases, log_use_case_check
from mqtt_bridge.config.bridge import BridgeConfig
from mqtt_bridge.config.load import validate
from mqtt_bridge.errors import ApiError, ConfigError, StorageError
from mqtt_bridge.images.references import FETCH_WORKERS, ImageReferences
from mqtt_bridge.images.shedding import ImageShedder
from mqtt_bridge.mqtt.publisher import MqttPublisher
from mqtt_bridge.mqtt.subscriber import MqttSubscriber
from mqtt_bridge.observe.health import HealthServer
from mqtt_bridge.observe.history import History
from mqtt_bridge.observe.hooks import OutcomeHook, OutcomeHooks
from mqtt_bridge.observe.ledger_recorder import LedgerRecorder
from mqtt_bridge.observe.metrics import BufferGauges, Metrics, TimedEventsApi
from mqtt_bridge.observe.receipts import Receipts
from mqtt_bridge.observe.redact import add_secrets
from mqtt_bridge.observe.stats import Stats
from mqtt_bridge.observe.status_page import StatusReport
from mqtt_bridge.observe.trace import MessageTrace
from mqtt_bridge.pipeline.flusher import Flusher, FlushSettings
from mqtt_bridge.pipeline.processor import Processor, in_flight_limits
from mqtt_bridge.pipeline.receiver import Receiver
from mqtt_bridge.routing.router import Router
from mqtt_bridge.storage.buffer import DiskBuffer
from mqtt_bridge.storage.ledger import DeliveryLedger, ledger_path
from mqtt_bridge.transform.ingest import Ingestor

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
    api_not_ready_reason: str = ""  # "auth: ..." or "billing/quota: <the API's message>" while api_ready is False
    mqtt_problem: str = ""  # why the broker connection fails, in words (issue 13); "" while it works
    mqtt_protocol: str = ""  # the protocol in use once a connection was accepted ("5" or "3.1.1")
    not_ready_reason: str = ""  # why /readyz answers 503, in words; "" when ready


class Service:
    """One running bridge. `start()` then `wait()`; or `run()` for both plus signal handling."""

    def __init__(self, config: BridgeConfig, *, allow_missing_use_cases: bool = False) -> None:
        """`config` as `config.load` returns it; one built otherwise is validated the same way here (ConfigError).

        `allow_missing_use_cases` is kept for callers of older versions and has no effect: a use case absent from
        the workspace's list never stops start-up (`api.usecases`)."""
        self.config = validate(config)
        _register_secrets(self.config)
        self.stats = Stats()
        self.trace = MessageTrace(config.health.trace_size)
        self.metrics = Metrics(self.stats, self.state, self._buffer_gauges,
                               high_water_bytes=self.config.buffer.max_bytes)
        del allow_missing_use_cases  # retired: the use-case check only warns
        self._receipts: Receipts | None = None
        self._receipt_client: MqttPublisher | None = None
        self._receipts_stop = threading.Event()
        self._ledger: DeliveryLedger | None = None
        self._ledger_recorder: LedgerRecorder | None = None
        self._ledger_stop = threading.Event()
        self._ledger_thread: threading.Thread | None = None
        self._gauges = (0.0, BufferGauges(0, 0.0))
        self._processor_stop = threading.Event()  # set in shutdown once the processor has done what it can
        self.stop_event = threading.Event()
        self._fatal: str | None = None
        self._router = Router(list(config.routes))
        self._buffer = DiskBuffer(config.buffer.path, config.buffer.max_bytes, config.buffer.min_free_bytes)
        self._wake = threading.Event()
        self._threads: list[threading.Thread] = []  # every thread started here, for the watchdog
        # the handles shutdown joins, in its order: receiver, processor and image threads, flusher, receipts
        self._receiver_thread: threading.Thread | None = None
        self._processor_thread: threading.Thread | None = None
        self._image_threads: list[threading.Thread] = []
        self._flusher_thread: threading.Thread | None = None
        self._receipts_thread: threading.Thread | None = None
        self._api: VisionEventsClient | None = None
        self._subscriber: MqttSubscriber | None = None
        self._receiver: Receiver | None = None
        self._processor: Processor | None = None
        self._references: ImageReferences | None = None  # only when a route has a url/file/companion image
        self._flusher: Flusher | None = None
        self._flusher_stop = threading.Event()
        self._health: HealthServer | None = None
        self._history_thread: threading.Thread | None = None  # samples the status page's charts; stops on stop_event
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
        """Check the use cases, open the buffer, then start flusher, intake and MQTT.

        The use-case check only warns (a new use case is listed only after its first event). Raises StorageError
        if the buffer is unusable.
        """
        config = self.config
        self._check_use_cases()
        self._buffer.open()
        try:
            self._api = VisionEventsClient(config.api.base_url, config.api.api_key_value,
                                           config.api.connect_timeout_s, config.api.read_timeout_s)
            if any(route.receipt_topic for route in config.routes):
                self._receipt_client = MqttPublisher(config.mqtt, f"{config.mqtt.client_id}-receipts")
                self._receipts = Receipts(config.routes, self._receipt_client, self.stats)
            self._open_ledger()
            # trace, receipts and the ledger hear the outcomes from the stages themselves, each hook isolated
            observers: list[OutcomeHook] = [self.trace] if self._receipts is None else [self.trace, self._receipts]
            if self._ledger_recorder is not None:
                observers.append(self._ledger_recorder)
            hooks = OutcomeHooks(observers)
            self._flusher = Flusher(
                self._buffer, TimedEventsApi(self._api, self.stats),
                FlushSettings(config.flush.max_events, config.flush.max_bytes, config.flush.max_wait_s,
                              config.api.retry_min_s, config.api.retry_max_s, config.flush.unconfirmed_attempts,
                              config.api.billing_retry_s),
                self.stats, self._flusher_stop, self._wake, hooks=hooks, on_auth_error=self._api.refresh_key)
            shedder = ImageShedder(config, self.stats) if ImageShedder.is_needed(config) else None
            entries, size = in_flight_limits(config.mqtt.receive_maximum, [
                r.image.companion.max_parked for r in config.routes if r.image.companion is not None])
            self._processor = Processor(Ingestor(self._router, config.mqtt.max_payload_bytes), self._buffer,
                                        self.stats, self._processor_stop, self._wake, max_in_flight=entries,
                                        max_in_flight_bytes=size, hooks=hooks, shed_images=shedder)
            self._receiver = Receiver(self._buffer.raw, self._buffer.is_over_high_water, self.stats, self.stop_event,
                                      self._processor.wake, max_pending=max(2 * config.mqtt.receive_maximum, 1000),
                                      may_exceed_high_water=shedder.may_exceed_high_water if shedder else None)
            subscriptions = self._router.subscriptions()
            if ImageReferences.is_needed(list(config.routes)):
                self._references = ImageReferences(self._router, self._processor.offer, self.stats,
                                                   self._processor_stop, config.mqtt.max_payload_bytes)
                subscriptions = list(dict.fromkeys(subscriptions + self._references.subscriptions()))
                self._processor.set_first_stage(self._references.offer)  # parks it, fetches its image, or passes on
            self._subscriber = MqttSubscriber(
                config.mqtt, subscriptions, self._receiver.offer, self.fail,
                on_connect_failure=lambda cause: self.stats.add("mqtt_connect_failures", label=cause))
        except Exception:
            self._close_ledger()
            self._buffer.close()
            raise
        if config.health.enabled:
            history = History(self.stats, self.state, self._buffer_gauges,
                              interval_s=config.health.history_interval_s)
            report = StatusReport(self.stats, self.state, self._buffer_gauges, self.trace,
                                  [route.label for route in self._router.routes], self._receipts is not None,
                                  history=history)
            token = config.health.token.get_secret_value() if config.health.token else None
            self._health = HealthServer(config.health.host, config.health.port, self.state,
                                        metrics=self.metrics.render, report=report, token=token,
                                        allowed_hosts=config.health.allowed_hosts)
            self._health.start()
            self._history_thread = self._spawn("history", lambda: history.run(self.stop_event))
        if self._receipts is not None and self._receipt_client is not None:
            self._receipt_client.start_background(max_queued=10_000)
            receipts = self._receipts
            self._receipts_thread = self._spawn("receipts", lambda: receipts.run(self._receipts_stop))
        if self._ledger_recorder is not None:
            recorder = self._ledger_recorder
            self._ledger_thread = self._spawn("ledger", lambda: recorder.run(self._ledger_stop))
        self._flusher_thread = self._spawn("flusher", self._flusher.run)
        self._processor_thread = self._spawn("processor", self._processor.run)
        self._receiver_thread = self._spawn("receiver", self._receiver.run)
        if self._references is not None:
            self._image_threads.append(self._spawn("image-timer", self._references.run_timer))
            for index in range(FETCH_WORKERS if self._references.has_fetches else 0):
                self._image_threads.append(self._spawn(f"image-fetch-{index}", self._references.run_fetcher))
        self._subscriber.start()
        log.info("bridge started routes=%d subscriptions=%s buffer=%s depth=%d raw_depth=%d",
                 len(self._router.routes), ",".join(subscriptions), config.buffer.path, self._buffer.depth,
                 self._buffer.raw.depth)

    def _open_ledger(self) -> None:
        """Open the delivery ledger for `verify` (`buffer.ledger_entries` > 0). Best effort: a ledger that cannot be
        opened is logged and left out; it never keeps the bridge from delivering."""
        entries = self.config.buffer.ledger_entries
        if entries <= 0:
            return
        try:
            self._ledger = DeliveryLedger(ledger_path(self.config.buffer.path), entries).open()
        except StorageError as exc:
            log.error("delivery ledger unusable, running without it (verify will find nothing new) error=%s", exc)
            return
        self._ledger_recorder = LedgerRecorder(self._ledger, self.stats)

    def _close_ledger(self) -> None:
        if self._ledger is not None:
            self._ledger.close()
            self._ledger = None

    def _check_use_cases(self) -> None:
        """Warn about every constant `use_case` that is archived or not in the list yet; never refuses to start (the
        list shows only use cases that have recorded events). An unreachable API only warns as well."""
        api = self.config.api
        client = VisionEventsClient(api.base_url, api.api_key_value, min(api.connect_timeout_s, 3.0),
                                    min(api.read_timeout_s, 5.0))
        try:
            result = check_use_cases(self.config.routes, client)
        except ApiError as exc:
            log.warning("use-case check skipped error=%r; starting anyway", str(exc))
            return
        finally:
            client.close()
        log_use_case_check(result)

    def _buffer_gauges(self) -> BufferGauges:
        """Buffer bytes, oldest ages, raw log depth for metrics and the status page (re-read at most once a second)."""
        read_at, gauges = self._gauges
        now = time.time()
        if now - read_at >= 1.0:
            try:
                oldest = self._buffer.oldest_received_at_s()
                oldest_raw = self._buffer.raw.oldest_received_at_s()
                gauges = BufferGauges(self._buffer.volume_bytes(), max(0.0, now - oldest) if oldest else 0.0,
                                      self._buffer.raw.depth, max(0.0, now - oldest_raw) if oldest_raw else 0.0)
            except StorageError:  # not open (before start or after shutdown)
                gauges = BufferGauges(0, 0.0)
            self._gauges = (now, gauges)
        return gauges

    def _spawn(self, name: str, target: Callable[[], None]) -> threading.Thread:
        """Start a named, non-daemon thread whose death stops the bridge; returns its handle."""
        def body() -> None:
            try:
                target()
            except BaseException as exc:
                log.exception("thread %s died", name)
                self.fail(f"thread {name} died: {exc!r}")

        thread = threading.Thread(target=body, name=name, daemon=False)
        thread.start()
        self._threads.append(thread)
        return thread

    def state(self) -> ServiceState:
        """Current health, for /healthz, /readyz and status output."""
        alive = all(t.is_alive() for t in self._threads) and bool(self._subscriber and self._subscriber.is_alive())
        mqtt_ok = bool(self._subscriber and self._subscriber.is_connected)
        api_ok = bool(self._flusher and self._flusher.is_api_ready)
        writable = bool(self._receiver and self._receiver.is_writable and self._processor
                        and self._processor.is_writable)
        backpressured = bool(self._receiver and self._receiver.is_backpressured)
        subscribed = bool(self._subscriber and self._subscriber.is_subscribed)
        problem = self._subscriber.problem if self._subscriber else ""
        # ready once subscribed: connected but not yet subscribed, the broker would not keep our messages
        reasons = [(not alive, "a bridge thread is not running"),
                   (not mqtt_ok, problem or f"connecting to the MQTT broker {self.config.mqtt.host}:"
                                           f"{self.config.mqtt.port}"),
                   (mqtt_ok and not subscribed, "subscribing at the MQTT broker"),
                   (not api_ok, "the Vision Events API refuses the API key"),
                   (not writable, "buffer commits fail"),
                   (backpressured, "the buffer is over its high-water mark: acks to the broker are held back")]
        not_ready = "; ".join(text for is_cause, text in reasons if is_cause)
        return ServiceState(
            is_alive=alive and not self.stop_event.is_set(),
            is_ready=not not_ready,
            mqtt_connected=mqtt_ok, mqtt_subscribed=subscribed,
            api_ready=api_ok, buffer_writable=writable, backpressured=backpressured,
            buffer_depth=self._buffer.depth, dead_letters=self._buffer.dead_letter_count,
            last_error=self._fatal or (self._flusher.last_error if self._flusher else ""),
            api_not_ready_reason=self._flusher.not_ready_reason if self._flusher else "",
            mqtt_problem=problem,
            mqtt_protocol=(self._subscriber.protocol_in_use or "") if self._subscriber else "",
            not_ready_reason=not_ready,
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
                log.info("status mqtt_connected=%s api_ready=%s depth=%d delivered=%d dead_letters=%d api_reason=%r",
                         state.mqtt_connected, state.api_ready, state.buffer_depth,
                         self.stats.count("events_delivered"), state.dead_letters, state.api_not_ready_reason)

    def shutdown(self) -> int:
        """Ordered shutdown under one deadline. Returns the exit code (0 clean, 1 after a fatal error)."""
        if self._stopped:
            return 0 if self._fatal is None else 1
        self._stopped = True
        self.stop_event.set()
        deadline = time.monotonic() + self.config.flush.shutdown_grace_s + 5.0
        log.info("shutdown: stopping the receiver")
        _join(self._receiver_thread, deadline)
        if self._subscriber is not None:
            log.info("shutdown: disconnecting mqtt")
            self._subscriber.stop(timeout_s=max(0.1, min(5.0, deadline - time.monotonic())))
        if self._processor is not None:  # half of what is left; the flusher needs the rest for its batch in flight
            self._processor.stop_when_idle(max(0.1, (deadline - time.monotonic()) / 2))
        for thread in [self._processor_thread, *self._image_threads]:
            _join(thread, deadline)
        log.info("shutdown: finishing the batch in flight")
        self._flusher_stop.set()
        self._wake.set()
        if self._flusher_thread is not None:
            _join(self._flusher_thread, deadline)
            if self._flusher_thread.is_alive():
                log.warning("flusher still busy at the deadline; its batch stays buffered")
        self._receipts_stop.set()
        _join(self._receipts_thread, min(deadline, time.monotonic() + 3.0))
        self._ledger_stop.set()  # after the flusher: every delivery it made is heard, then written
        _join(self._ledger_thread, min(deadline, time.monotonic() + 3.0))
        if self._ledger_thread is None or not self._ledger_thread.is_alive():
            self._close_ledger()
        if self._receipt_client is not None:
            self._receipt_client.close()
        if self._api is not None:
            self._api.close()
        _join(self._history_thread, deadline)
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


def _join(thread: threading.Thread | None, deadline: float) -> None:
    """Join a thread we started, until the shared monotonic `deadline` (at least a moment)."""
    if thread is not None:
        thread.join(max(0.1, deadline - time.monotonic()))


def _register_secrets(config: BridgeConfig) -> None:
    """The MQTT password and health token join the one redaction step (the API client registers the key)."""
    secrets = [config.health.token.get_secret_value() if config.health.token else ""]
    with contextlib.suppress(ConfigError):  # an unreadable password file fails the connection, reported there
        secrets.append(config.mqtt.password_value() or "")
    add_secrets(secrets)
