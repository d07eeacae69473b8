"""The receiver thread (the durable ack path): received messages → the raw log, one durable commit per group → acks
in arrival order. Nothing else happens before the ack (design §3).

Owns: group commit (everything received while the previous commit was being fsynced goes into the next one, so
one fsync covers many messages), the ack-after-commit rule, and backpressure: above the high-water mark (the raw
log and the event buffer share one database, so the mark covers both) it stops committing and acking, so the broker
holds the rest, unless every route sheds images first (`images.shedding`: the processor then buffers their events
without images). A commit that fails is retried; its messages are never acked before it succeeds, and never
dropped. No exception escapes the loop. Routing, decoding, images and rules are the processor's
(`pipeline.processor`), after the ack.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable

from mqtt_bridge.model.inbound import Inbound
from mqtt_bridge.observe.stats import Stats
from mqtt_bridge.storage.raw_log import RawLog, RawMessage

__all__ = ["Receiver"]

log = logging.getLogger(__name__)

_MAX_GROUP = 1000
_MAX_GROUP_BYTES = 8 * 2**20
_MAX_QUEUED_BYTES = 32 * 2**20
_RETRY_S = 1.0
_HIGH_WATER_CHECK_S = 0.2
_HIGH_WATER_CHECK_BYTES = 256 * 2**10  # ... or after this many bytes logged, whichever comes first
_GATHER_S = 0.02


class Receiver:
    """Hands messages from the MQTT thread to the raw log. `offer` is called by paho; `run` is the thread body.

    `is_over_high_water` is the buffer's answer; `may_exceed_high_water` says whether to go on anyway (every route
    sheds images, and the disk still has its reserve); `on_logged` is called after each commit (wakes the
    processor).
    """

    def __init__(self, raw_log: RawLog, is_over_high_water: Callable[[], bool], stats: Stats,
                 stop: threading.Event, on_logged: Callable[[], None], max_pending: int,
                 may_exceed_high_water: Callable[[], bool] | None = None,
                 max_group_bytes: int = _MAX_GROUP_BYTES) -> None:
        self._raw_log = raw_log
        self._is_over = is_over_high_water
        self._may_exceed = may_exceed_high_water
        self._stats = stats
        self._stop = stop
        self._on_logged = on_logged
        self._queue: queue.Queue[Inbound] = queue.Queue(maxsize=max_pending)
        self._space = threading.Condition()
        self._queued_bytes = 0
        self.is_backpressured = False
        self.is_writable = True
        self._next_high_water_check = 0.0
        self._logged_since_check = 0  # bytes committed since the mark was last asked
        # a group takes at most a fraction of the disk's reserve (`buffer.min_free_bytes`; the caller decides): a
        # burst the broker held back must not fill the disk between two looks at the mark
        self._max_group_bytes = max(1, min(_MAX_GROUP_BYTES, max_group_bytes))

    def offer(self, message: Inbound) -> None:
        """Queue a message for the receiver thread; blocks (backpressure on the socket) while the queue is full,
        in messages or in bytes: big images wait at the broker, not in this process's memory."""
        size = len(message.payload)
        with self._space:
            while self._queued_bytes and self._queued_bytes + size > _MAX_QUEUED_BYTES and not self._stop.is_set():
                self._space.wait(0.5)
            self._queued_bytes += size
        while not self._stop.is_set():
            try:
                self._queue.put(message, timeout=0.5)
                return
            except queue.Full:
                continue
        self._release([message])  # stopping: not queued, not acked (the broker sends it again)

    def _release(self, group: list[Inbound]) -> None:
        """The group is committed (or given up): its bytes no longer count against the queue."""
        with self._space:
            self._queued_bytes -= sum(len(message.payload) for message in group)
            self._space.notify_all()

    def run(self) -> None:
        """Commit and ack groups of messages until stopped; then commit what is already queued."""
        log.info("receiver started")
        while True:
            try:
                group = self._take_group()
                if not group:
                    if self._stop.is_set():
                        break
                    continue
                try:
                    self._commit_until_done(group)
                finally:
                    self._release(group)
            except Exception:  # a thread loop: log, count, go on
                log.exception("receiver loop error")
                self._stats.add("intake_errors")
                if self._stop.wait(_RETRY_S):
                    break
        log.info("receiver stopped")

    def _commit_until_done(self, group: list[Inbound]) -> None:
        """Commit and ack the group, retrying the same group after an unexpected error: dropping it would leave
        its messages un-acked, holding the broker's in-flight window until the next reconnect. If the bridge
        stops first, they stay un-acked and the broker sends them again after the restart."""
        while True:
            try:
                self._commit_and_ack(group)
                return
            except Exception:  # retried below; nothing of the group is acked
                log.exception("receiver failed on a group of %d messages; retrying it (none of it is acked)",
                              len(group))
                self._stats.add("intake_errors")
                if self._stop.wait(_RETRY_S):
                    return

    def _take_group(self) -> list[Inbound]:
        try:
            first = self._queue.get(timeout=0.2)
        except queue.Empty:
            return []
        group = [first]
        size = len(first.payload)
        # Gather for a few milliseconds: at low rates this lets one fsync cover several messages (an fsync costs
        # far more CPU than a message), at high rates the queue is full and the group fills without waiting.
        # A group is also capped in bytes, so that messages with big images do not pile up in memory.
        deadline = time.monotonic() + _GATHER_S
        while len(group) < _MAX_GROUP and size < self._max_group_bytes:
            try:
                message = self._queue.get_nowait()
            except queue.Empty:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._stop.is_set():
                    break
                try:
                    message = self._queue.get(timeout=remaining)
                except queue.Empty:
                    break
            group.append(message)
            size += len(message.payload)
        return group

    def _commit_and_ack(self, group: list[Inbound]) -> None:
        if not self._wait_below_high_water():
            return  # stopping while over the mark: not acked, the broker sends them again
        messages = [RawMessage(m.topic, m.payload, m.qos, m.retain, m.received_at_s, m.properties) for m in group]
        while True:
            try:
                self._raw_log.append(messages)
                self.is_writable = True
                break
            except Exception:  # retried: nothing is acked before the commit
                self.is_writable = False
                log.exception("raw log commit failed messages=%d; retrying, nothing is acked", len(group))
                self._stats.add("buffer_commit_errors")
                if self._stop.wait(_RETRY_S):
                    return  # not acked: the broker redelivers after restart
        self._logged_since_check += sum(len(m.payload) for m in group)
        self._stats.add("messages_logged", len(group))
        self._on_logged()
        for message in group:
            message.ack()

    def _is_over_high_water(self) -> bool:
        """The buffer's answer, asked at most every `_HIGH_WATER_CHECK_S` while below the mark (it costs a
        statvfs and a SQLite page count), or after `_HIGH_WATER_CHECK_BYTES` logged: with groups capped at a quarter
        of the reserve (at least 1 MiB, `supervise.intake`), a burst overshoots the mark by one group at most."""
        now = time.monotonic()
        if (not self.is_backpressured and now < self._next_high_water_check
                and self._logged_since_check < _HIGH_WATER_CHECK_BYTES):
            return False
        self._next_high_water_check = now + _HIGH_WATER_CHECK_S
        self._logged_since_check = 0
        return self._is_over()

    def _wait_below_high_water(self) -> bool:
        """Hold the group (un-acked) while over the high-water mark, unless shedding images lets it go on.
        False when the bridge stops first."""
        while self._is_over_high_water():
            if self._may_exceed is not None and self._may_exceed():
                break
            if not self.is_backpressured:
                log.warning("buffer over its high-water mark raw_depth=%d; no more acks until it drains",
                            self._raw_log.depth)
            self.is_backpressured = True
            self._stats.set("backpressure", 1)
            if self._stop.wait(0.5):
                return False
        if self.is_backpressured:
            log.info("buffer below its high-water mark again; acking resumes")
        self.is_backpressured = False
        self._stats.set("backpressure", 0)
        return True
