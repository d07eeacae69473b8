"""A fake Vision Events API for the flusher's unit tests: implements `api.client.EventsApi` in memory.

It answers like the real API (spec/vision-events-api.md): a batch is all-or-nothing (one bad event refuses the
whole request), an upload returns a sourceId, a batch answer lists the created eventIds. Failures are scripted:
`batch_errors` / `upload_errors` are raised by the next calls, in order; `reject_event_ids` are events the API always
refuses (a permanent 4xx with a body); `reject_upload_names` are uploads (by file name) it always refuses. Partial
answers: `drop_event_ids` are left out of every answer (and not stored), `drop_once_event_ids` out of the next answer
that holds them; `is_answering_without_event_ids` answers like an older server (`{"created": n}` only). Every call
is recorded, in order, with its monotonic time.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from mqtt_bridge.api.client import BatchAnswer
from mqtt_bridge.errors import ApiError, PermanentApiError
from mqtt_bridge.model.values import JsonDict

__all__ = ["Call", "FakeEventsApi"]


@dataclass(frozen=True, slots=True)
class Call:
    """One request the flusher made: `batch` (with its eventIds) or `upload` (with the image name)."""

    kind: str
    at_s: float
    event_ids: tuple[str, ...] = ()
    name: str = ""
    succeeded: bool = False
    title: str = ""  # an upload's `name` field (`name` above is its file part's filename)
    metadata: JsonDict | None = None


@dataclass
class FakeEventsApi:
    """In-memory `EventsApi`. Thread-safe: the flusher thread calls it while the test reads it."""

    batch_errors: list[Exception] = field(default_factory=list)
    upload_errors: list[Exception] = field(default_factory=list)
    reject_event_ids: set[str] = field(default_factory=set)
    reject_upload_names: set[str] = field(default_factory=set)
    drop_event_ids: set[str] = field(default_factory=set)
    drop_once_event_ids: set[str] = field(default_factory=set)
    is_answering_without_event_ids: bool = False
    calls: list[Call] = field(default_factory=list)
    events: dict[str, JsonDict] = field(default_factory=dict)  # created, by eventId (an upsert, like the API)
    created: list[str] = field(default_factory=list)  # eventIds in the order created, repeats included
    uploads: dict[str, bytes] = field(default_factory=dict)  # sourceId -> bytes
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def create_batch(self, events: list[JsonDict]) -> BatchAnswer:
        ids = tuple(str(event["eventId"]) for event in events)
        with self._lock:
            error: Exception | None = self.batch_errors.pop(0) if self.batch_errors else None
            bad = [event_id for event_id in ids if event_id in self.reject_event_ids]
            if error is None and bad:
                error = PermanentApiError("POST /batch: HTTP 400", 400,
                                          f'{{"error": "invalid event", "eventId": "{bad[0]}"}}')
            self.calls.append(Call("batch", time.monotonic(), event_ids=ids, succeeded=error is None))
            if error is not None:
                raise error
            confirmed: list[str] = []
            for event_id, event in zip(ids, events, strict=True):
                if event_id in self.drop_event_ids or event_id in self.drop_once_event_ids:
                    self.drop_once_event_ids.discard(event_id)
                    continue
                self.events[event_id] = event
                self.created.append(event_id)
                confirmed.append(event_id)
            if self.is_answering_without_event_ids:
                return BatchAnswer(None, len(confirmed), 201, f'{{"created": {len(confirmed)}}}')
            body = f'{{"created": {len(confirmed)}, "eventIds": [{", ".join(repr(i) for i in confirmed)}]}}'
            return BatchAnswer(frozenset(confirmed), len(confirmed), 201, body.replace("'", '"'))

    def upload_image(self, data: bytes, file_name: str, *, name: str = "", metadata: JsonDict | None = None) -> str:
        with self._lock:
            error: Exception | None = self.upload_errors.pop(0) if self.upload_errors else None
            if error is None and file_name in self.reject_upload_names:
                error = PermanentApiError("POST /upload: HTTP 415", 415, '{"error": "unsupported image"}')
            self.calls.append(Call("upload", time.monotonic(), name=file_name, succeeded=error is None, title=name,
                                   metadata=metadata))
            if error is not None:
                raise error
            source_id = f"src-{len(self.uploads) + 1}"
            self.uploads[source_id] = data
            return source_id

    def kinds(self) -> list[str]:
        """The kinds of the calls so far, in order."""
        with self._lock:
            return [call.kind for call in self.calls]

    def batch_calls(self) -> list[Call]:
        """The batch requests so far (failed ones included)."""
        with self._lock:
            return [call for call in self.calls if call.kind == "batch"]

    def fail_batches(self, *errors: ApiError | Exception) -> None:
        """Make the next batch requests raise `errors`, in order."""
        with self._lock:
            self.batch_errors.extend(errors)

    def heal(self) -> None:
        """Drop the failures still scripted: from now on every request succeeds (unless rejected)."""
        with self._lock:
            self.batch_errors.clear()
            self.upload_errors.clear()
