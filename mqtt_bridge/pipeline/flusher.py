"""The flusher: buffered records → image uploads → `POST /vision-events/batch` → delete, retry or dead-letter.

Owns: batching (fires on `max_events`, `max_bytes` or `max_wait_s`), upload-before-create with the sourceId
remembered by content hash in the buffer, retry with capped, jittered exponential backoff that honours
`Retry-After`, narrowing a rejected batch down to the offending events by splitting it (spec §5 G4: the API is
all-or-nothing), and keeping the data on 401/403 while reporting not ready. Emits image-uploaded, delivered and
dead-lettered outcomes to its `OutcomeHook` (`observe.hooks`). Runs in one named thread; no exception escapes its
loop.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from mqtt_bridge.api.client import EventsApi
from mqtt_bridge.errors import ApiError, AuthApiError, DeadLetterReason, PermanentApiError, RetryableApiError
from mqtt_bridge.images.checks import content_hash
from mqtt_bridge.images.naming import upload_labels
from mqtt_bridge.model.record import DeadLetter, Record
from mqtt_bridge.model.values import JsonDict
from mqtt_bridge.observe.hooks import OutcomeHook
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
        self.last_delivery_s: float | None = None
        self.last_error = ""

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
        """Deliver one batch, retrying retryable failures until it is done or the service stops."""
        while batch:
            error = self._attempt(batch)
            if error is None:
                self._backoff.reset()
                if not self.is_api_ready:
                    log.info("api accepts requests again")
                self.is_api_ready = True
                self.last_error = ""
                return
            if isinstance(error, AuthApiError):
                self.is_api_ready = False
                self.last_error = f"{error} {error.body[:200]}"
                self._stats.add("api_retries", label=str(error.status))
                delay = self._backoff.next_delay_s()
                log.warning("api refused the key status=%s; keeping %d events, retry_in_s=%.1f",
                            error.status, len(batch), delay)
                if self._on_auth_error is not None:
                    self._on_auth_error()
            else:
                self.last_error = str(error)
                self._stats.add("api_retries", label=str(error.status or "network"))
                delay = self._backoff.next_delay_s(error.retry_after_s)
                log.warning("api retryable failure error=%r retry_after_s=%s retry_in_s=%.1f batch=%d",
                            str(error), error.retry_after_s, delay, len(batch))
            if self._stop.wait(delay):
                raise _Stop
            # part of the batch may be done (delivered or dead-lettered): re-read what is still queued
            batch = self._buffer.peek(len(batch), self._settings.max_bytes)

    def _attempt(self, batch: list[Record]) -> AuthApiError | RetryableApiError | None:
        """One pass over the batch. Whatever is done as a prefix of it is committed, even after an error."""
        progress = _Progress(batch)
        try:
            self._create(self._upload_images(progress), progress)
        except (AuthApiError, RetryableApiError) as exc:
            return exc
        finally:
            self._commit(progress)
        return None

    def _upload_images(self, progress: _Progress) -> list[tuple[int, JsonDict]]:
        """Upload each record's image once; returns (index, event body with sourceId) per record to create."""
        out: list[tuple[int, JsonDict]] = []
        for index, record in enumerate(progress.records):
            event = record.event
            if record.image:
                image_hash = content_hash(record.image)
                source_id = self._buffer.source_id(image_hash)
                if source_id is None:
                    labels = upload_labels(record)  # name and metadata make the image findable (issue 12 item 7)
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
            out.append((index, event))
        return out

    def _create(self, items: list[tuple[int, JsonDict]], progress: _Progress) -> None:
        """Send events; on a permanent 4xx split the batch to isolate and dead-letter the offending events."""
        if not items:
            return
        try:
            self._api.create_batch([event for _, event in items])
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
        for index, _ in items:
            progress.done[index] = True

    def _commit(self, progress: _Progress) -> None:
        """Complete the done prefix of the batch in the buffer (one transaction), then count and report it."""
        prefix = progress.prefix()
        if prefix == 0:
            return
        records = progress.records[:prefix]
        letters = [progress.dead[i] for i in range(prefix) if i in progress.dead]
        hashes = [content_hash(r.image) for i, r in enumerate(records) if r.image and i not in progress.dead]
        self._buffer.complete(prefix, letters, hashes)
        delivered = prefix - len(letters)
        if delivered:
            self.last_delivery_s = time.time()
            self._stats.add("events_delivered", delivered)
            self._stats.set("last_delivery_time_seconds", self.last_delivery_s)
        for letter in letters:
            log.error("event dead-lettered reason=%s event_id=%s route=%s status=%s body=%r", letter.reason,
                      letter.event_id, letter.route, letter.api_status, letter.api_body[:300])
            self._stats.add("dead_letters", label=letter.reason)
        log.debug("batch completed events=%d dead_letters=%d depth=%d", prefix, len(letters), self._buffer.depth)
        for index, record in enumerate(records):
            dead = progress.dead.get(index)
            if dead is None:
                self._hooks.on_delivered(record)
            else:
                self._hooks.on_dead_lettered(record, f"{dead.reason}: {dead.api_body[:300] or dead.detail}")


class _Progress:
    """What one pass over a batch achieved: which records are done, and the dead letters among them."""

    def __init__(self, records: list[Record]) -> None:
        self.records = records
        self.done = [False] * len(records)
        self.dead: dict[int, DeadLetter] = {}

    def dead_letter(self, index: int, reason: DeadLetterReason, exc: ApiError) -> None:
        record = self.records[index]
        self.dead[index] = DeadLetter(
            reason=reason, detail=str(exc), topic=record.topic, route=record.route, payload=record.to_bytes(),
            received_at_s=record.received_at_s, dead_at_s=time.time(), event_id=record.event_id,
            api_status=exc.status, api_body=exc.body)
        self.done[index] = True

    def prefix(self) -> int:
        """How many records from the start are done (only a done prefix can be completed in the buffer)."""
        for index, is_done in enumerate(self.done):
            if not is_done:
                return index
        return len(self.done)


def _with_source_id(event: JsonDict, source_id: str) -> JsonDict:
    images = event.get("images")
    if not isinstance(images, list) or not images or not isinstance(images[0], dict):
        return event
    first = {**images[0], "sourceId": source_id}
    return {**event, "images": [first, *images[1:]]}
