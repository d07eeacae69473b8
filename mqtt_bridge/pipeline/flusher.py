"""The flusher: buffered records → image uploads → `POST /vision-events/batch` → delete, retry or dead-letter.

Owns: batching (fires on `max_events`, `max_bytes` or `max_wait_s`), upload-before-create with the sourceId
remembered by content hash in the buffer, retry with capped, jittered exponential backoff that honours
`Retry-After`, narrowing a rejected batch down to the offending events by splitting it (spec §5 G4: the API is
all-or-nothing), only what the answer's `eventIds` confirmed counting as delivered (an event left out is re-sent
alone and dead-lettered as `not_confirmed` after `unconfirmed_attempts` answers without it; issue 12), and keeping
the data on 401/403 (auth) and 402/423 (billing/quota, retried every `billing_retry_s`) while reporting not ready
with a reason. Emits image-uploaded, delivered and dead-lettered outcomes to its `OutcomeHook` (`observe.hooks`).
Runs in one named thread; no exception escapes its loop.

A batch is worked on until every record of it is done (delivered or dead-lettered); only the done *prefix* is
deleted from the buffer, so an event confirmed behind an unconfirmed one waits in the buffer (and is re-sent after
a crash, which the API's upsert by eventId absorbs) but is never deleted before it was confirmed.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from mqtt_bridge.api.client import BatchAnswer, EventsApi, error_message
from mqtt_bridge.errors import (
    ApiError,
    AuthApiError,
    BillingApiError,
    DeadLetterReason,
    PermanentApiError,
    RetryableApiError,
)
from mqtt_bridge.images.checks import content_hash
from mqtt_bridge.images.naming import upload_labels
from mqtt_bridge.model.record import DeadLetter, Record
from mqtt_bridge.model.values import JsonDict
from mqtt_bridge.observe.hooks import OutcomeHook
from mqtt_bridge.observe.redact import redact
from mqtt_bridge.observe.stats import Stats
from mqtt_bridge.storage.buffer import DiskBuffer

__all__ = ["Backoff", "FlushSettings", "Flusher"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class FlushSettings:
    """Batching and retry knobs (from `flush` and `api` in the config)."""

    max_events: int = 100
    max_bytes: int = 5 * 2**20
    max_wait_s: float = 0.5
    retry_min_s: float = 1.0
    retry_max_s: float = 60.0
    unconfirmed_attempts: int = 3  # answers that leave an event out before it is dead-lettered as not_confirmed
    billing_retry_s: float = 300.0  # retry interval after 402/423 when the answer has no Retry-After


class Backoff:
    """Capped exponential backoff with jitter: the n-th delay lies in [d/2, d] with d = min(max, min * 2^n)."""

    def __init__(self, min_s: float, max_s: float, rng: random.Random | None = None) -> None:
        self.min_s = min_s
        self.max_s = max_s
        self.attempt = 0
        self._rng = rng or random.Random()

    def next_delay_s(self, retry_after_s: float | None = None) -> float:
        """The next delay; never shorter than the server's `Retry-After`."""
        ceiling = min(self.max_s, self.min_s * (2 ** min(self.attempt, 30)))
        self.attempt += 1
        delay = self._rng.uniform(ceiling / 2, ceiling)
        if retry_after_s is not None:
            delay = max(delay, min(retry_after_s, 3600.0))
        return delay

    def reset(self) -> None:
        """Start over after a success."""
        self.attempt = 0


class _Stop(Exception):
    """Internal: the stop event was set while waiting."""


class Flusher:
    """Delivers the buffer's records to the API until stopped. `run()` is the thread body."""

    def __init__(self, buffer: DiskBuffer, api: EventsApi, settings: FlushSettings, stats: Stats,
                 stop: threading.Event, wake: threading.Event,
                 hooks: OutcomeHook | None = None,
                 on_auth_error: Callable[[], None] | None = None) -> None:
        self._buffer = buffer
        self._api = api
        self._settings = settings
        self._stats = stats
        self._stop = stop
        self._wake = wake
        self._hooks = hooks if hooks is not None else OutcomeHook()  # trace, receipts: each isolated
        self._on_auth_error = on_auth_error
        self._backoff = Backoff(settings.retry_min_s, settings.retry_max_s)
        self.is_api_ready = True
        self.not_ready_reason = ""  # "auth: ..." or "billing/quota: ..." while the API refuses us, else ""
        self.last_delivery_s: float | None = None
        self.last_error = ""
        self._has_warned_no_event_ids = False

    # --- thread body ------------------------------------------------------------------------------------------

    def run(self) -> None:
        """Loop until the stop event: wait for a batch, deliver it. A batch in flight at stop is finished."""
        log.info("flusher started max_events=%d max_wait_s=%.3f", self._settings.max_events,
                 self._settings.max_wait_s)
        self._buffer.relax_sync_for_this_thread()
        while not self._stop.is_set():
            try:
                batch = self._next_batch()
                if batch:
                    self._deliver_batch(batch)
            except _Stop:
                break
            except Exception:
                log.exception("flusher loop error; retrying after backoff")
                self._stats.add("flusher_errors")
                if self._stop.wait(self._backoff.next_delay_s()):
                    break
        log.info("flusher stopped depth=%d", self._buffer.depth)

    def _next_batch(self) -> list[Record]:
        """Peek a batch once it is full or its oldest record has waited `max_wait_s`."""
        settings = self._settings
        while not self._stop.is_set():
            self._wake.clear()
            if self._buffer.depth <= 0:
                self._wake.wait(1.0)
                continue
            batch = self._buffer.peek(settings.max_events, settings.max_bytes)
            if not batch:
                self._wake.wait(0.2)
                continue
            # min(): a clock stepped backwards (NTP on a box without RTC) must not hold a batch for the jump
            wait_s = min(batch[0].received_at_s + settings.max_wait_s - time.time(), settings.max_wait_s)
            if len(batch) >= settings.max_events or wait_s <= 0 or self._buffer.depth > len(batch):
                return batch
            deadline = time.monotonic() + wait_s
            while (remaining := deadline - time.monotonic()) > 0 and not self._stop.is_set():
                if self._buffer.depth >= settings.max_events:
                    break
                self._wake.wait(min(remaining, 0.05))
                self._wake.clear()
            return self._buffer.peek(settings.max_events, settings.max_bytes)
        return []

    # --- one batch --------------------------------------------------------------------------------------------

    def _deliver_batch(self, batch: list[Record]) -> None:
        """Deliver one batch: retry until every record of it is done (delivered or dead-lettered) or stopped."""
        progress = _Progress(batch)
        while True:
            error = self._attempt(progress)
            if error is None:
                self._set_ready()
                if progress.is_complete():
                    self._backoff.reset()
                    return
                delay = self._backoff.next_delay_s()
                log.warning("api left events unconfirmed; re-sending them alone unconfirmed=%d retry_in_s=%.1f",
                            progress.pending(), delay)
            elif isinstance(error, AuthApiError):
                self._set_not_ready(f"auth: {error}{_api_text(error)}")
                self.last_error = redact(f"{error} {error.body[:200]}")
                self._stats.add("api_retries", label=str(error.status))
                delay = self._backoff.next_delay_s()
                log.warning("api refused the key status=%s; keeping %d events, retry_in_s=%.1f",
                            error.status, progress.pending(), delay)
                if self._on_auth_error is not None:
                    self._on_auth_error()
            elif isinstance(error, BillingApiError):
                # "do not retry until fixed": nothing is dead-lettered, the data waits; retry slowly (issue 12)
                self._set_not_ready(f"billing/quota: {error_message(error.body) or error}"
                                    f" (HTTP {error.status})")
                self.last_error = redact(f"{error} {error.body[:200]}")
                self._stats.add("api_retries", label=str(error.status))
                delay = self._settings.billing_retry_s if error.retry_after_s is None else \
                    min(error.retry_after_s, 3600.0)
                log.warning("api refused for billing or quota status=%s message=%r; keeping %d events, "
                            "retry_in_s=%.1f", error.status, error_message(error.body)[:200], progress.pending(),
                            delay)
            else:
                self.last_error = redact(str(error))
                self._stats.add("api_retries", label=str(error.status or "network"))
                delay = self._backoff.next_delay_s(error.retry_after_s)
                log.warning("api retryable failure error=%r retry_after_s=%s retry_in_s=%.1f batch=%d",
                            str(error), error.retry_after_s, delay, progress.pending())
            if self._stop.wait(delay):
                raise _Stop

    def _set_ready(self) -> None:
        if not self.is_api_ready:
            log.info("api accepts requests again")
        self.is_api_ready = True
        self.not_ready_reason = ""
        self.last_error = ""

    def _set_not_ready(self, reason: str) -> None:
        reason = redact(reason)
        if self.is_api_ready or reason[:500] != self.not_ready_reason:
            log.error("api not ready reason=%r", reason[:300])
        self.is_api_ready = False
        self.not_ready_reason = redact(reason)[:500]

    def _attempt(self, progress: _Progress) -> AuthApiError | BillingApiError | RetryableApiError | None:
        """One pass over what is not done yet. Whatever is done as a prefix is committed, even after an error."""
        try:
            items = self._upload_images(progress)
            # an event an earlier 201 left out goes again on its own (after the backoff), so that no other event
            # shares its fate
            again = [item for item in items if progress.unconfirmed[item[0]]]
            self._create([item for item in items if not progress.unconfirmed[item[0]]], progress)
            for item in again:
                self._create([item], progress)
        except (AuthApiError, BillingApiError, RetryableApiError) as exc:
            return exc
        finally:
            self._commit(progress)
        return None

    def _upload_images(self, progress: _Progress) -> list[tuple[int, JsonDict]]:
        """Upload each pending record's image once; returns (index, event body with sourceId) per record to send."""
        out: list[tuple[int, JsonDict]] = []
        for index, record in enumerate(progress.records):
            if progress.done[index]:
                continue
            event = progress.prepared.get(index)
            if event is None:
                event = record.event
                if record.image:
                    image_hash = content_hash(record.image)
                    source_id = self._buffer.source_id(image_hash)
                    if source_id is None:
                        labels = upload_labels(record)  # name and metadata make the image findable (issue 12)
                        try:
                            source_id = self._api.upload_image(record.image, labels.file_name, name=labels.name,
                                                               metadata=labels.metadata)
                        except PermanentApiError as exc:
                            progress.dead_letter(index, DeadLetterReason.UPLOAD_REJECTED, exc)
                            continue
                        self._buffer.remember_source_id(image_hash, source_id)
                        self._stats.add("images_uploaded")
                        self._hooks.on_image_uploaded(record)
                    event = _with_source_id(event, source_id)
                progress.prepared[index] = event
            out.append((index, event))
        return out

    def _create(self, items: list[tuple[int, JsonDict]], progress: _Progress) -> None:
        """Send events; on a permanent 4xx split the batch to isolate and dead-letter the offending events."""
        if not items:
            return
        try:
            answer = self._api.create_batch([event for _, event in items])
            self._stats.add("api_batches")
        except PermanentApiError as exc:
            if len(items) == 1:
                progress.dead_letter(items[0][0], DeadLetterReason.API_REJECTED, exc)
                return
            log.info("api rejected a batch of %d status=%s; splitting to find the bad events", len(items),
                     exc.status)
            middle = len(items) // 2
            self._create(items[:middle], progress)
            self._create(items[middle:], progress)
            return
        self._settle(items, answer, progress)

    def _settle(self, items: list[tuple[int, JsonDict]], answer: BatchAnswer, progress: _Progress) -> None:
        """Mark what the answer confirmed done; count, and in the end dead-letter, what it left out."""
        if answer.event_ids is None:
            # an older server: it cannot say which events it created, so every sent event counts (as before)
            if not self._has_warned_no_event_ids:
                self._has_warned_no_event_ids = True
                log.warning("batch answer holds no eventIds; treating every sent event as delivered "
                            "(an older API?) created=%s sent=%d", answer.created, len(items))
            elif answer.created is not None and answer.created != len(items):
                log.warning("batch anomaly sent=%d created=%d", len(items), answer.created)
        missing: list[int] = []
        for index, _ in items:
            if answer.is_confirmed(progress.records[index].event_id):
                progress.done[index] = True
            else:
                missing.append(index)
        if not missing:
            return
        self._stats.add("events_unconfirmed", len(missing))
        attempts = self._settings.unconfirmed_attempts
        log.warning("api did not confirm events sent=%d confirmed=%d created=%s unconfirmed=%d first_event_id=%s",
                    len(items), len(items) - len(missing), answer.created, len(missing),
                    progress.records[missing[0]].event_id)
        for index in missing:
            progress.unconfirmed[index] += 1
            if progress.unconfirmed[index] >= attempts:
                progress.settle_dead(index, DeadLetterReason.NOT_CONFIRMED,
                                     f"{attempts} answers of the API (HTTP {answer.status}) left this eventId out",
                                     answer.status, answer.body)

    def _commit(self, progress: _Progress) -> None:
        """Complete the newly done prefix of the batch in the buffer (one transaction), then count and report it."""
        start, prefix = progress.committed, progress.prefix()
        if prefix <= start:
            return
        records = progress.records[start:prefix]
        letters = [progress.dead[i] for i in range(start, prefix) if i in progress.dead]
        hashes = [content_hash(r.image) for i, r in enumerate(records, start) if r.image and i not in progress.dead]
        self._buffer.complete(prefix - start, letters, hashes)
        progress.committed = prefix
        delivered = len(records) - len(letters)
        if delivered:
            self.last_delivery_s = time.time()
            self._stats.add("events_delivered", delivered)
            self._stats.set("last_delivery_time_seconds", self.last_delivery_s)
        for letter in letters:
            log.error("event dead-lettered reason=%s event_id=%s route=%s status=%s body=%r", letter.reason,
                      letter.event_id, letter.route, letter.api_status, letter.api_body[:300])
            self._stats.add("dead_letters", label=letter.reason)
        log.debug("batch completed events=%d dead_letters=%d depth=%d", len(records), len(letters),
                  self._buffer.depth)
        run: list[Record] = []  # delivered records are told in runs (one hook call each), in batch order
        for index, record in enumerate(records, start):
            dead = progress.dead.get(index)
            if dead is None:
                run.append(record)
                continue
            if run:
                self._hooks.on_delivered_many(run)
                run = []
            self._hooks.on_dead_lettered(record, f"{dead.reason}: {dead.api_body[:300] or dead.detail}")
        if run:
            self._hooks.on_delivered_many(run)


class _Progress:
    """What the passes over one batch achieved: which records are done, the dead letters among them, the event
    bodies ready to send (sourceIds in place), how often an answer left each one out, how many are committed."""

    def __init__(self, records: list[Record]) -> None:
        self.records = records
        self.done = [False] * len(records)
        self.dead: dict[int, DeadLetter] = {}
        self.prepared: dict[int, JsonDict] = {}
        self.unconfirmed = [0] * len(records)
        self.committed = 0

    def dead_letter(self, index: int, reason: DeadLetterReason, exc: ApiError) -> None:
        self.settle_dead(index, reason, str(exc), exc.status, exc.body)

    def settle_dead(self, index: int, reason: DeadLetterReason, detail: str, status: int | None, body: str) -> None:
        record = self.records[index]
        self.dead[index] = DeadLetter(
            reason=reason, detail=redact(detail), topic=record.topic, route=record.route, payload=record.to_bytes(),
            received_at_s=record.received_at_s, dead_at_s=time.time(), event_id=record.event_id,
            api_status=status, api_body=redact(body))  # the client redacted it: a second line
        self.done[index] = True

    def prefix(self) -> int:
        """How many records from the start are done (only a done prefix can be completed in the buffer)."""
        for index, is_done in enumerate(self.done):
            if not is_done:
                return index
        return len(self.done)

    def is_complete(self) -> bool:
        """Whether every record is done and committed."""
        return self.committed == len(self.records)

    def pending(self) -> int:
        """Records not done yet."""
        return self.done.count(False)


def _api_text(error: ApiError) -> str:
    message = error_message(error.body)
    return f": {message}" if message else ""


def _with_source_id(event: JsonDict, source_id: str) -> JsonDict:
    images = event.get("images")
    if not isinstance(images, list) or not images or not isinstance(images[0], dict):
        return event
    first = {**images[0], "sourceId": source_id}
    return {**event, "images": [first, *images[1:]]}
