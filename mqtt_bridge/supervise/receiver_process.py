"""The receiver process (design §3, issue 14 item 2): MQTT in, the raw log on disk, acks out; nothing else.

Owns: this child's life. It opens the buffer's database without loading it (the supervisor holds the instance lock
and checked the file), appends after every segment on disk (`RawLog.start_appending`) and says where it starts
(HELLO, for the worker's `RawLog.rewind`), runs the intake (subscriber → receiver thread → raw log → acks), wakes
the worker after its commits (coalesced by the link) and reports its state and counters every quarter second. It
stops on the supervisor's STOP, or when the supervisor is gone: stop taking messages, commit and ack what is queued,
disconnect (the session stays: the broker keeps the rest), close. A dead network or receiver thread exits 1, and
the supervisor starts the process again; the broker redelivers what was not acked.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection

from mqtt_bridge.config.bridge import BridgeConfig
from mqtt_bridge.images.shedding import ImageShedder
from mqtt_bridge.observe.stats import Stats
from mqtt_bridge.routing.router import Router
from mqtt_bridge.storage.buffer import DiskBuffer
from mqtt_bridge.supervise.intake import build_intake, subscriptions_for
from mqtt_bridge.supervise.link import HELLO, STOP, ChildLink, Message

__all__ = ["run_receiver"]

log = logging.getLogger(__name__)


class _Stopper:
    """The process's one stop: the supervisor's STOP (with its grace), the supervisor gone, or a fatal error."""

    def __init__(self, grace_s: float) -> None:
        self.event = threading.Event()
        self.grace_s = grace_s
        self.fatal = ""

    def on_message(self, message: Message) -> None:
        if message[0] == STOP:
            self.grace_s = float(str(message[1]))
            self.event.set()

    def fail(self, reason: str) -> None:
        if not self.fatal:
            self.fatal = reason
            log.error("receiver process: fatal: %s; stopping", reason)
        self.event.set()


def run_receiver(config: BridgeConfig, conn: Connection) -> int:
    """The receiver process's body; returns its exit code (0 after a STOP, 1 after a fatal error)."""
    stats = Stats()
    stopper = _Stopper(config.flush.shutdown_grace_s + 5.0)
    buffer = DiskBuffer(config.buffer.path, config.buffer.max_bytes, config.buffer.min_free_bytes)
    buffer.open(take_lock=False, load=False)
    try:
        first_seq = buffer.raw.start_appending()
        shedder = ImageShedder(config, stats) if ImageShedder.is_needed(config) else None
        # the report reads `intake` and `receiver_thread`, bound below, when the link first sends (after `start`)
        link = ChildLink(conn, stopper.on_message, stopper.event.set,
                         report=lambda: intake.report(stats, receiver_thread.is_alive()))
        intake = build_intake(config, buffer, stats, stopper.event, on_logged=link.wake, on_fatal=stopper.fail,
                              subscriptions=subscriptions_for(Router(list(config.routes))), shedder=shedder)
        receiver_thread = threading.Thread(target=_guarded(intake.receiver.run, stopper), name="receiver")
        link.send((HELLO, first_seq))
        link.start()
        receiver_thread.start()
        intake.subscriber.start()
        log.info("receiver process started subscriptions=%s first_seq=%d", ",".join(intake.subscriptions),
                 first_seq)
        while not stopper.event.wait(1.0):
            if not intake.subscriber.is_alive():
                stopper.fail("mqtt network thread is gone")
            if not receiver_thread.is_alive():
                stopper.fail("receiver thread is gone")
        deadline = time.monotonic() + stopper.grace_s
        log.info("receiver process stopping: committing what is queued, then disconnecting")
        receiver_thread.join(max(0.1, deadline - time.monotonic()))
        intake.subscriber.stop(timeout_s=max(0.1, min(5.0, deadline - time.monotonic())))
        link.flush()
        link.close()
    finally:
        buffer.close()
    log.info("receiver process stopped")
    return 1 if stopper.fatal else 0


def _guarded(body: Callable[[], None], stopper: _Stopper) -> Callable[[], None]:
    """The receiver thread's body: an exception that escapes it stops the process (exit 1, restarted)."""
    def run() -> None:
        try:
            body()
        except BaseException as exc:
            log.exception("receiver thread died")
            stopper.fail(f"receiver thread died: {exc!r}")
    return run
