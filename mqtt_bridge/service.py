"""The composition root: builds the bridge from a config, runs its threads, and shuts it down in order.

Owns: wiring (router, ingestor, buffer and its raw log, API client, subscriber, receiver, processor, image
references, flusher, and the outcome hooks that trace, receipts and the ledger hear them through). It wires; it
does not relay: the receiver logs each raw message and acks it (design §3), the processor turns the raw log into
events (there `Inbound.ack` means "this raw entry is finished"). Also the one stop event, the watchdog (a thread
that dies stops everything, non-zero exit), signals, and the ordered shutdown under one deadline: receiver (commit,
ack) → MQTT disconnect (the session stays) → processor (what it does not reach stays in the raw log) → the flusher's
batch in flight → receipts and ledger → close the buffer. Nothing else in the package starts threads for the bridge.
The same class is the worker process of `supervise` (`remote_intake`): everything but the subscriber and the
receiver, which run in the receiver process; the supervisor orders the shutdown across the two.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType

from mqtt_bridge.api.client import VisionEventsClient
from mqtt_bridge.api.usecases import check_use_cases, log_use_case_check
from mqtt_bridge.config.bridge import BridgeConfig
from mqtt_bridge.config.load import validate
from mqtt_bridge.errors import ApiError, ConfigError, StorageError
from mqtt_bridge.images.references import FETCH_WORKERS, ImageReferences
from mqtt_bridge.images.shedding import ImageShedder
from mqtt_bridge.mqtt.publisher import MqttPublisher
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
from mqtt_bridge.routing.router import Router
from mqtt_bridge.storage.buffer import DiskBuffer
from mqtt_bridge.storage.ledger import DeliveryLedger, ledger_path
from mqtt_bridge.supervise.intake import Intake, RemoteIntake, build_intake, subscriptions_for
from mqtt_bridge.supervise.state import IntakeState, ServiceState, compose_state
from mqtt_bridge.transform.ingest import Ingestor

__all__ = ["Service", "ServiceState"]

log = logging.getLogger(__name__)


class Service:
    """One running bridge. `start()` then `wait()`; or `run()` for both plus signal handling."""

    def __init__(self, config: BridgeConfig, *, allow_missing_use_cases: bool = False,
                 remote_intake: bool = False) -> None:
        """`config` as `config.load` returns it; one built otherwise is validated the same way here (ConfigError).

        `remote_intake`: the worker process of `supervise`: the subscriber and receiver run in the receiver process
        (this one looks for their raw log segments on disk, `raw_logged` wakes it, `intake.update` takes their
        reports) and the buffer's instance lock is the supervisor's. `allow_missing_use_cases` is kept for callers
        of older versions and has no effect (`api.usecases`)."""
        self.config = validate(config)
        _register_secrets(self.config)
        self.stats = Stats()
        self.remote = RemoteIntake(self.stats, f"{config.mqtt.host}:{config.mqtt.port}") if remote_intake else None
        self.trace = MessageTrace(config.health.trace_size)
        remote = self.remote
        self.metrics = Metrics(self.stats, self.state, self._buffer_gauges,
                               high_water_bytes=self.config.buffer.max_bytes,
                               other_processes=None if remote is None else {"receiver": lambda: remote.pid,
                                                                            "supervisor": os.getppid})
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
        self._intake: Intake | None = None  # the subscriber and the receiver, when they run in this process
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
        self._buffer.open(take_lock=self.remote is None)
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
                                        max_in_flight_bytes=size, hooks=hooks, shed_images=shedder,
                                        poll_raw_log=self.remote is not None)
            if ImageReferences.is_needed(list(config.routes)):
                self._references = ImageReferences(self._router, self._processor.offer, self.stats,
                                                   self._processor_stop, config.mqtt.max_payload_bytes)
                self._processor.set_first_stage(self._references.offer)  # parks it, fetches its image, or passes on
            subscriptions = subscriptions_for(self._router)  # the receiver's, here or in the receiver process
            if self.remote is None:
                self._intake = build_intake(config, self._buffer, self.stats, self.stop_event,
                                            on_logged=self._processor.wake, on_fatal=self.fail, shedder=shedder,
                                            subscriptions=subscriptions)
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
        if self._intake is not None:
            self._receiver_thread = self._spawn("receiver", self._intake.receiver.run)
        if self._references is not None:
            self._image_threads.append(self._spawn("image-timer", self._references.run_timer))
            for index in range(FETCH_WORKERS if self._references.has_fetches else 0):
                self._image_threads.append(self._spawn(f"image-fetch-{index}", self._references.run_fetcher))
        if self._intake is not None:
            self._intake.subscriber.start()
        log.info("bridge started routes=%d subscriptions=%s buffer=%s depth=%d raw_depth=%d",
                 len(self._router.routes), ",".join(subscriptions),
                 config.buffer.path, self._buffer.depth, self._buffer.raw.depth)

    def raw_logged(self, first_seq: int | None = None) -> None:
        """The receiver process committed raw segments, or (`first_seq`) started: the processor looks at the log."""
        if first_seq is not None:
            self._buffer.raw.rewind(first_seq)
        if self._processor is not None:
            self._processor.wake()

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
        if self.remote is not None:
            intake = self.remote.state()
        elif self._intake is not None:
            intake = self._intake.state(bool(self._receiver_thread and self._receiver_thread.is_alive()))
        else:  # not started
            intake = IntakeState(alive=False, connected=False, subscribed=False, problem="", protocol="",
                                 writable=True, backpressured=False)
        return compose_state(
            intake, threads_alive=all(t.is_alive() for t in self._threads), stopping=self.stop_event.is_set(),
            api_ready=bool(self._flusher and self._flusher.is_api_ready),
            api_reason=self._flusher.not_ready_reason if self._flusher else "",
            processor_writable=bool(self._processor and self._processor.is_writable),
            broker=f"{self.config.mqtt.host}:{self.config.mqtt.port}", buffer_depth=self._buffer.depth,
            dead_letters=self._buffer.dead_letter_count,
            last_error=self._fatal or (self._flusher.last_error if self._flusher else ""))

    def wait(self, status_interval_s: float = 60.0) -> None:
        """Block until stopped, watching the threads (a dead thread stops the bridge)."""
        next_status = time.monotonic() + status_interval_s
        while not self.stop_event.wait(1.0):
            if self._intake is not None and not self._intake.subscriber.is_alive():
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

    def shutdown(self, grace_s: float | None = None) -> int:
        """Ordered shutdown under one deadline (`grace_s`, by default `flush.shutdown_grace_s` + 5 s). Returns the
        exit code (0 clean, 1 after a fatal error)."""
        if self._stopped:
            return 0 if self._fatal is None else 1
        self._stopped = True
        self.stop_event.set()
        deadline = time.monotonic() + (self.config.flush.shutdown_grace_s + 5.0 if grace_s is None else grace_s)
        if self._intake is not None:
            log.info("shutdown: stopping the receiver")
            _join(self._receiver_thread, deadline)
            log.info("shutdown: disconnecting mqtt")
            self._intake.subscriber.stop(timeout_s=max(0.1, min(5.0, deadline - time.monotonic())))
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
        """Start, wait for SIGTERM/SIGINT or a fatal error, shut down; returns the exit code (the bridge in one
        process: `mqtt-bridge run --single-process`, the demo, the tests)."""

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
