"""The processor thread: raw log entries → events or dead letters, after the broker's ack (design §3).

Owns: the cursor over the raw log (on start, everything in it; then each segment the receiver commits, handed
over in memory, or found on disk when the receiver runs in its own process), turning
each raw entry into an `Inbound` whose ack means "this raw entry is finished" (not a broker ack), the hand-off to the
first stage (`images.references` for routes with url/file/companion images, else straight to `offer`), and the
commit: a group of messages is ingested (route, decode, rules, validation: `transform.ingest`), and its records and
dead letters are inserted and the finished raw entries (the group's, their paired companion images', and images no
detection claimed) deleted in ONE transaction. That commit skips the fsync (relaxed sync on this thread's
connection): a transaction lost to a power cut is redone from the raw log, and the deterministic eventIds make the
redo idempotent (the API overwrites). A message the broker sent twice (both copies logged) is committed once
(`pipeline.recent`). Over the high-water mark it sheds images where the routes say so (`images.shedding`); it never
waits for the mark itself (the receiver holds the acks): it only moves data from the raw log to the buffer.

Memory stays bounded: what the processor took and has not finished (queued here, waiting for a companion image or
for a fetch) is at most `max_in_flight` entries and about `max_in_flight_bytes` (a segment at a time); the rest
waits on disk. No exception escapes the loop; a group whose commit fails is retried, its entries stay in the raw log.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from functools import partial

from mqtt_bridge.model.inbound import Inbound
from mqtt_bridge.model.record import DeadLetter, Record
from mqtt_bridge.observe.hooks import OutcomeHook
from mqtt_bridge.observe.stats import Stats
from mqtt_bridge.pipeline.recent import RECENT_COMMITS, RecentCommits
from mqtt_bridge.storage.buffer import DiskBuffer
from mqtt_bridge.storage.raw_log import RawEntry
from mqtt_bridge.transform.ingest import Ingestor

__all__ = ["Processor", "in_flight_limits"]

log = logging.getLogger(__name__)

_MAX_GROUP = 1000
_MAX_GROUP_BYTES = 8 * 2**20
_RETRY_S = 1.0
_IDLE_S = 0.2
_HIGH_WATER_CHECK_S = 0.2
_IN_FLIGHT_BYTES = 16 * 2**20  # raw messages held in memory (fetches waiting, a group) besides companion parking
_PARKED_BYTES = 64 * 2**20  # the images one companion join may park (`CompanionJoin.max_parked_bytes`)


def in_flight_limits(receive_maximum: int, max_parked: list[int]) -> tuple[int, int]:
    """The processor's memory bound (entries, bytes): a broker window's worth (as the receiver's queue), plus what
    the companion joins (their `max_parked` each) may park, so that parked messages never starve the rest."""
    return max(2 * receive_maximum, 1000) + sum(max_parked), _IN_FLIGHT_BYTES + _PARKED_BYTES * len(max_parked)


class Processor:
    """Turns raw log entries into buffered events. `offer` takes a message back from the image stage (any
    thread); `run` is the thread body; `set_first_stage` names where each raw entry goes first."""

    def __init__(self, ingestor: Ingestor, buffer: DiskBuffer, stats: Stats, stop: threading.Event,
                 wake_flusher: threading.Event, *, max_in_flight: int, max_in_flight_bytes: int,
                 hooks: OutcomeHook | None = None,
                 shed_images: Callable[[list[Record]], list[Record] | None] | None = None,
                 poll_raw_log: bool = False) -> None:
        self._ingestor = ingestor
        self._buffer = buffer
        self._raw = buffer.raw
        self._stats = stats
        self._stop = stop
        self._wake_flusher = wake_flusher
        self._max_in_flight = max_in_flight
        self._max_in_flight_bytes = max_in_flight_bytes
        self._hooks = hooks if hooks is not None else OutcomeHook()
        self._shed_images = shed_images  # over the high-water mark: the group without images, or None to keep them
        self._first_stage: Callable[[Inbound], None] = self.offer
        self._ready: deque[Inbound] = deque()  # messages to commit (bounded by the in-flight limit)
        self._ready_bytes = 0
        self._wake = threading.Condition()
        self._recent = RecentCommits(RECENT_COMMITS)
        self._next_high_water_check = 0.0
        self._over_high_water = False
        self._is_abandoned = False  # a commit was given up at stop: commit nothing more
        # the receiver runs in another process: look for its new segments on disk at every step (`RawLog.discover`)
        self._poll_raw_log = poll_raw_log
        self._steps = 0  # loop turns, so that a stop waits for one look at the log after the receiver stopped
        self.is_writable = True

    def set_first_stage(self, stage: Callable[[Inbound], None]) -> None:
        """Where each raw entry goes first (the image references' `offer`, which hands it back to `offer`)."""
        self._first_stage = stage

    def offer(self, message: Inbound) -> None:
        """Queue a message for the commit. Never blocks: what is queued is bounded by the in-flight limit."""
        with self._wake:
            self._ready.append(message)
            self._ready_bytes += len(message.payload)
            self._wake.notify()

    def wake(self) -> None:
        """New raw entries are in the log (called by the receiver after its commit)."""
        with self._wake:
            self._wake.notify()

    @property
    def is_idle(self) -> bool:
        """Nothing is queued here and the raw log has nothing the processor has not read."""
        with self._wake:
            return not self._ready and self._raw.untaken == 0

    def stop_when_idle(self, timeout_s: float) -> bool:
        """At shutdown: wait until `is_idle` (at most `timeout_s`), then set the stop event (the image stage's too);
        True when it was idle. What is left stays in the raw log."""
        ends = time.monotonic() + timeout_s
        steps = self._steps
        while ((not self.is_idle or self._steps < steps + 2) and time.monotonic() < ends
               and not self._stop.wait(0.05)):
            self.wake()
        idle = self.is_idle
        log.info("processor stopping idle=%s raw_depth=%d", idle, self._raw.depth)
        self._stop.set()
        return idle

    def run(self) -> None:
        """Take raw entries and commit what they become until stopped; then commit what is queued."""
        self._buffer.relax_sync_for_this_thread()  # a lost commit is redone from the raw log (module docstring)
        log.info("processor started raw_depth=%d", self._raw.depth)
        while True:
            try:
                self._steps += 1
                if self._step():
                    continue
                if self._stop.is_set():
                    break
                with self._wake:
                    if not self._ready:
                        self._wake.wait(_IDLE_S)
            except Exception:  # a thread loop: log, count, go on (the raw entries stay in the log)
                log.exception("processor loop error")
                self._stats.add("intake_errors")
                if self._stop.wait(_RETRY_S):
                    break
        self._finish_queued()
        log.info("processor stopped raw_depth=%d (processed again after a restart)", self._raw.depth)

    def _step(self) -> bool:
        """One unit of work: read raw segments (up to a group's worth) and commit a queued group, or commit finished
        entries alone. False when there was nothing to do."""
        taken = 0
        if self._poll_raw_log:
            self._raw.discover()
        # read segments until a group's worth is queued: a backlog of small segments is committed in big groups
        while not self._stop.is_set() and self._has_room() and self._has_no_full_group():
            entries = self._raw.take()
            if not entries:
                break
            taken += len(entries)
            for entry in entries:
                self._first_stage(self._inbound(entry))
        group = self._take_group()
        if group:
            self._commit_until_done(group)
            return True
        if taken:
            return True
        if self._raw.has_finished:  # e.g. images no detection claimed: nothing to insert, only to delete
            self._commit_until_done([])
        return False

    def _finish_queued(self) -> None:
        """On stop: commit what is queued and the entries finished meanwhile (once each; errors are logged)."""
        if self._is_abandoned:
            return
        try:
            while group := self._take_group():
                self._commit_and_finish(group)
            self._commit_and_finish([])
        except Exception:  # stopping: what is not committed stays in the raw log and is processed after a restart
            log.exception("processor could not commit its last group; it stays in the raw log")
            self._stats.add("intake_errors")

    def _has_no_full_group(self) -> bool:
        """Fewer than a group's worth (entries and bytes) is queued: reading more would only hold memory."""
        with self._wake:
            return len(self._ready) < _MAX_GROUP and self._ready_bytes < _MAX_GROUP_BYTES

    def _has_room(self) -> bool:
        entries, size = self._raw.in_flight
        return entries < self._max_in_flight and size < self._max_in_flight_bytes

    def _inbound(self, entry: RawEntry) -> Inbound:
        message = entry.message
        # the generation is the entry's segment: two log entries of the same message (a broker redelivery) differ
        return Inbound(topic=message.topic, payload=message.payload, mid=entry.index, qos=message.qos,
                       generation=entry.seq, received_at_s=message.received_at_s, retain=message.retain,
                       properties=message.properties, acker=partial(self._raw.finish, entry.seq, entry.index))

    def _take_group(self) -> list[Inbound]:
        group: list[Inbound] = []
        size = 0
        with self._wake:
            while self._ready and len(group) < _MAX_GROUP and size < _MAX_GROUP_BYTES:
                message = self._ready.popleft()
                group.append(message)
                size += len(message.payload)
            self._ready_bytes -= size
        return group

    def _commit_until_done(self, group: list[Inbound]) -> None:
        """Commit the group, retrying the same group after an unexpected error (its raw entries stay in the log
        meanwhile). If the bridge stops first, `_finish_queued` has no more to do with it: it is redone after a
        restart."""
        while True:
            try:
                self._commit_and_finish(group)
                return
            except Exception:  # retried below; the raw entries are still in the log
                log.exception("processor failed on a group of %d messages; retrying it", len(group))
                self._stats.add("intake_errors")
                if self._stop.wait(_RETRY_S):
                    return

    def _commit_and_finish(self, group: list[Inbound]) -> None:
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
        records = self._shed_if_over_high_water(records)
        ingested = len(records)
        records, digests = self._recent.fresh(records)  # after shedding: compare what would be committed
        if self._is_abandoned:
            return
        for message in group:
            message.ack()  # marks its raw entry (and its companions') finished: deleted by the commit below
        while True:
            try:
                self._buffer.append(records, dead, finish_raw=True)
                self.is_writable = True
                break
            except Exception:  # retried: the raw entries stay in the log until it succeeds
                self.is_writable = False
                log.exception("buffer commit failed messages=%d; retrying (the raw entries stay)", len(group))
                self._stats.add("buffer_commit_errors")
                if self._stop.wait(_RETRY_S):
                    # not committed: redone from the raw log after a restart. Its entries are marked finished, so
                    # no later commit may delete raw entries any more (they would go without their events)
                    self._is_abandoned = True
                    return
        self._recent.remember(digests)
        for route, count in received.items():
            self._stats.add("messages_received", count, label=route)
        if ingested > len(records):
            self._stats.add("redeliveries_recognised", ingested - len(records))
        for letter in dead:
            self._stats.add("dead_letters", label=letter.reason)
        self._stats.add("events_buffered", len(records))
        if records:
            self._wake_flusher.set()
        if group:
            self._hooks.on_committed(records, dead)

    def _shed_if_over_high_water(self, records: list[Record]) -> list[Record]:
        """Over the high-water mark, the records without their images where the routes say so (asked at most
        every `_HIGH_WATER_CHECK_S` while below the mark)."""
        if self._shed_images is None or not records:
            return records
        now = time.monotonic()
        if self._over_high_water or now >= self._next_high_water_check:
            self._next_high_water_check = now + _HIGH_WATER_CHECK_S
            self._over_high_water = self._buffer.is_over_high_water()
        if not self._over_high_water:
            return records
        shed = self._shed_images(records)
        return records if shed is None else shed
