"""The receiver thread (the durable ack path): received messages → ingest → one durable commit per group → acks in
arrival order.

Owns: group commit (everything received while the previous commit was being fsynced goes into the next one, so
one fsync covers many messages), the ack-after-commit rule, and backpressure: above the buffer's high-water mark
it stops committing and acking, so the broker holds the rest (design §3), unless every record of the group
belongs to a route that sheds images first (`shedding`). A commit that fails is retried; its messages are never
acked before it succeeds. No exception escapes the loop. Each message is acked through itself (`Inbound.ack`, which
also acks the companion image messages paired to it); a message that waited for its image (`images.references`:
URL, file or companion topic) carries it as `Inbound.attachment` for ingest. After the acks, the group's outcome goes
to the `OutcomeHook` (trace, receipts). A record identical to one this process already committed (a message the
broker sent again after a reconnect, its first copy committed but its ack lost) is not committed twice: the message
is only acked (`_RecentCommits`).
"""

from __future__ import annotations

import hashlib
import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable

import orjson

from mqtt_bridge.model.inbound import Inbound
from mqtt_bridge.model.record import DeadLetter, Record
from mqtt_bridge.observe.hooks import OutcomeHook
from mqtt_bridge.observe.stats import Stats
from mqtt_bridge.storage.buffer import DiskBuffer
from mqtt_bridge.transform.ingest import Ingestor

__all__ = ["Receiver"]

log = logging.getLogger(__name__)

_MAX_GROUP = 1000
_MAX_GROUP_BYTES = 8 * 2**20
_MAX_QUEUED_BYTES = 32 * 2**20
_RETRY_S = 1.0
_HIGH_WATER_CHECK_S = 0.2
_GATHER_S = 0.02
# How many committed records `_RecentCommits` remembers (about 100 bytes each). A broker resends at most its in-flight
# window after a reconnect, but Mosquitto before 2.0.13 lets that window grow past Receive Maximum while it drains a
# backlog (eclipse/mosquitto#2301, fixed by 330bf6ef): measured up to 1262 un-acked with Receive Maximum 100.
_RECENT_COMMITS = 20_000


class _RecentCommits:
    """The digests of the last `capacity` records this process committed, to recognise a redelivered message.

    A digest covers the route, the event and the image bytes: the eventId is derived from the message, so a message
    the broker sends again yields the same digest, and committing it again would only make the flusher overwrite
    the event with identical content. A record that differs in anything (a later version under its own id, an image
    the first copy had to shed) is committed as usual. Memory only: after a restart every redelivery is committed
    (and the API overwrites it).
    """

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._digests: dict[bytes, None] = {}  # insertion-ordered: the oldest is evicted first

    @staticmethod
    def digest(record: Record) -> bytes:
        """What identifies the record's delivery: route, event (sorted keys) and image."""
        parts = (record.route.encode(), orjson.dumps(record.event, option=orjson.OPT_SORT_KEYS),
                 record.image_name.encode(), record.image)
        return hashlib.sha1(b"\0".join(parts), usedforsecurity=False).digest()

    def fresh(self, records: list[Record]) -> tuple[list[Record], list[bytes]]:
        """The records not committed before (nor twice in this list), with their digests for `remember`."""
        kept: list[Record] = []
        digests: list[bytes] = []
        seen: set[bytes] = set()
        for record in records:
            digest = self.digest(record)
            if digest in self._digests or digest in seen:
                continue
            seen.add(digest)
            kept.append(record)
            digests.append(digest)
        return kept, digests

    def remember(self, digests: list[bytes]) -> None:
        """Call after the durable commit of the records `fresh` returned."""
        for digest in digests:
            self._digests[digest] = None
        while len(self._digests) > self._capacity:
            del self._digests[next(iter(self._digests))]


class Receiver:
    """Hands messages from the MQTT thread to the buffer. `offer` is called by paho; `run` is the thread body."""

    def __init__(self, ingestor: Ingestor, buffer: DiskBuffer, stats: Stats,
                 stop: threading.Event, wake_flusher: threading.Event, max_pending: int,
                 hooks: OutcomeHook | None = None,
                 shed_images: Callable[[list[Record]], list[Record] | None] | None = None) -> None:
        self._ingestor = ingestor
        self._shed_images = shed_images  # over the high-water mark: the group without images, or None to wait
        # status-page trace and receipts: one call per committed group, after the acks
        self._hooks = hooks if hooks is not None else OutcomeHook()
        self._buffer = buffer
        self._stats = stats
        self._stop = stop
        self._wake_flusher = wake_flusher
        self._queue: queue.Queue[Inbound] = queue.Queue(maxsize=max_pending)
        self._space = threading.Condition()
        self._queued_bytes = 0
        self.is_backpressured = False
        self.is_shedding_images = False
        self.is_writable = True
        self._next_high_water_check = 0.0
        self._recent = _RecentCommits(_RECENT_COMMITS)

    def offer(self, message: Inbound) -> None:
        """Queue a message for the intake thread; blocks (backpressure on the socket) while the queue is full,
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

    def _release(self, group: list[Inbound]) -> None:
        """The group is committed (or given up): its bytes no longer count against the queue."""
        with self._space:
            self._queued_bytes -= sum(len(message.payload) for message in group)
            self._space.notify_all()

    def run(self) -> None:
        """Commit and ack groups of messages until stopped; then commit what is already queued."""
        log.info("intake started")
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
            except Exception:
                log.exception("intake loop error")
                self._stats.add("intake_errors")
                if self._stop.wait(_RETRY_S):
                    break
        log.info("intake stopped")

    def _commit_until_done(self, group: list[Inbound]) -> None:
        """Commit and ack the group, retrying the same group after an unexpected error: dropping it would leave
        its messages un-acked, holding the broker's in-flight window until the next reconnect. If the bridge
        stops first, they stay un-acked and the broker sends them again after the restart."""
        while True:
            try:
                self._commit_and_ack(group)
                return
            except Exception:
                log.exception("intake failed on a group of %d messages; retrying it (none of it is acked)",
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
        while len(group) < _MAX_GROUP and size < _MAX_GROUP_BYTES:
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
        records: list[Record] = []
        dead: list[DeadLetter] = []
        received: Counter[str] = Counter()
        for message in group:
            result = self._ingestor.process(message.topic, message.payload, message.received_at_s,
                                            message.attachment)
            received[result.route or "(none)"] += 1
            if result.dropped_boxes:
                self._stats.add("boxes_dropped", result.dropped_boxes, label=result.route)
            if result.timestamps_replaced:
                self._stats.add("timestamps_replaced", result.timestamps_replaced, label=result.route)
            if result.keys_dropped:
                self._stats.add("metadata_keys_dropped", result.keys_dropped, label=result.route)
            if result.dead_letter is not None:
                dead.append(result.dead_letter)
                log.error("message dead-lettered reason=%s topic=%s route=%s bytes=%d detail=%r",
                          result.dead_letter.reason, result.dead_letter.topic[:200], result.route,
                          len(message.payload), result.dead_letter.detail[:300])
            elif not result.records:
                self._stats.add("messages_without_event", label=result.route)
            records.extend(result.records)
        for route, count in received.items():
            self._stats.add("messages_received", count, label=route)
        records = self._wait_below_high_water(records)
        ingested = len(records)
        records, digests = self._recent.fresh(records)  # after shedding: compare what would be committed
        if ingested > len(records):
            self._stats.add("redeliveries_recognised", ingested - len(records))
        while True:
            try:
                self._buffer.append(records, dead)
                self.is_writable = True
                break
            except Exception:
                self.is_writable = False
                log.exception("buffer commit failed messages=%d; retrying, nothing is acked", len(group))
                self._stats.add("buffer_commit_errors")
                if self._stop.wait(_RETRY_S):
                    return  # not acked: the broker redelivers after restart
        self._recent.remember(digests)
        for letter in dead:
            self._stats.add("dead_letters", label=letter.reason)
        self._stats.add("events_buffered", len(records))
        if records:
            self._wake_flusher.set()
        for message in group:
            message.ack()
        self._hooks.on_committed(records, dead)

    def _is_over_high_water(self) -> bool:
        """The buffer's answer, asked at most every `_HIGH_WATER_CHECK_S` while below the mark (it costs a
        statvfs and a SQLite page count; a group or two more is far below any sensible reserve)."""
        now = time.monotonic()
        if not self.is_backpressured and not self.is_shedding_images and now < self._next_high_water_check:
            return False
        self._next_high_water_check = now + _HIGH_WATER_CHECK_S
        return self._buffer.is_over_high_water()

    def _wait_below_high_water(self, records: list[Record]) -> list[Record]:
        """Hold the group (un-acked) while the buffer is over its high-water mark, unless its images can go."""
        while self._is_over_high_water():
            if self._shed_images is not None:
                shed = self._shed_images(records)
                if shed is not None:
                    self.is_shedding_images = True  # re-checked every group until below the mark
                    return shed
            if not self.is_backpressured:
                log.warning("buffer over its high-water mark depth=%d bytes=%d; no more acks until it drains",
                            self._buffer.depth, self._buffer.volume_bytes())
            self.is_backpressured = True
            self._stats.set("backpressure", 1)
            if self._stop.wait(0.5):
                return records
        self.is_shedding_images = False
        if self.is_backpressured:
            log.info("buffer below its high-water mark again; acking resumes")
        self.is_backpressured = False
        self._stats.set("backpressure", 0)
        return records
