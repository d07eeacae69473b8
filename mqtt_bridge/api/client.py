"""The Vision Events API client on `requests`: the only module that imports it.

Owns: HTTP to `{base_url}/vision-events/...` (batch create, image upload, query, use cases), the Bearer header (never
`?api_key=`, which proxies log), a timeout on every request, one pooled session, and the mapping from outcomes to
the error types of `errors.py`: 401/403 → AuthApiError, 402/423 → BillingApiError (with `Retry-After`),
408/429/5xx and network failures → RetryableApiError (with `Retry-After`), any other 4xx → PermanentApiError with
the API's answer; and the batch answer as a `BatchAnswer` (which eventIds the API confirmed). Must not retry by
itself, nor decide what an unconfirmed event means (the flusher does). Every answer text that enters the bridge
here (error bodies, a redirect's Location) passes through `observe.redact` first: a gateway that echoes the
request headers cannot put the key into dead letters, receipts, the trace or the status page. The key is
registered with the redaction step when read.
"""

from __future__ import annotations

import email.utils
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import orjson
import requests

from mqtt_bridge import __version__
from mqtt_bridge.errors import AuthApiError, BillingApiError, PermanentApiError, RetryableApiError
from mqtt_bridge.model.values import JsonDict, JsonValue
from mqtt_bridge.observe.redact import add_secrets, redact

__all__ = ["BatchAnswer", "EventsApi", "VisionEventsClient", "error_message", "parse_retry_after"]

log = logging.getLogger(__name__)
_BODY_EXCERPT = 2000


@dataclass(frozen=True, slots=True)
class BatchAnswer:
    """What `POST /vision-events/batch` answered (201 `{"created": n, "eventIds": [...]}`, spec §6).

    `event_ids` is None when the answer holds no `eventIds` list (an older server): the caller cannot tell which
    events were created. `created` is None when the answer holds no integer `created`. `body` is an excerpt of the
    answer (redacted), kept with a dead letter; the client fills it only when the answer left a sent event out.
    """

    event_ids: frozenset[str] | None
    created: int | None = None
    status: int = 201
    body: str = ""

    @classmethod
    def from_json(cls, answer: JsonValue, status: int = 201, body: str = "") -> BatchAnswer:
        """Read an answer body; anything that is not a list of strings under `eventIds` reads as no list."""
        if not isinstance(answer, dict):
            return cls(None, None, status, body)
        ids = answer.get("eventIds")
        created = answer.get("created")
        event_ids = None
        if isinstance(ids, list) and all(isinstance(i, str) for i in ids):
            event_ids = frozenset(i for i in ids if isinstance(i, str))
        return cls(event_ids, created if isinstance(created, int) and not isinstance(created, bool) else None,
                   status, body)

    def is_confirmed(self, event_id: str) -> bool:
        """Whether the answer lists `event_id` (True for every event when the answer has no `eventIds`)."""
        return self.event_ids is None or event_id in self.event_ids


class EventsApi(Protocol):
    """What the flusher needs from the API (a seam for unit tests)."""

    def create_batch(self, events: list[JsonDict]) -> BatchAnswer:
        """Create or overwrite up to 100 events; the answer says which the API confirmed."""

    def upload_image(self, data: bytes, file_name: str, *, name: str = "", metadata: JsonDict | None = None) -> str:
        """Upload one image (`file_name` names the file part; `name` and `metadata` tag it in the workspace) and
        return its sourceId."""


def error_message(body: str) -> str:
    """The API's own message from an error body (`{"error": "..."}`, spec §4.1; `message` too), else ""."""
    try:
        parsed = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        return ""
    if isinstance(parsed, dict):
        for key in ("error", "message"):
            value = parsed.get(key)
            if isinstance(value, str) and value:
                return value[:300]
            if isinstance(value, dict) and isinstance(value.get("message"), str):
                return str(value["message"])[:300]
    return ""


def parse_retry_after(value: str | None, now_s: float | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` header (delta seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)  # RFC 9110 says whole seconds; a fraction costs nothing to honour
    except ValueError:
        pass
    else:
        return seconds if math.isfinite(seconds) and seconds >= 0 else None
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, moment.timestamp() - (time.time() if now_s is None else now_s))


class VisionEventsClient:
    """A thread-compatible client; give each thread its own instance if more than one sends."""

    def __init__(self, base_url: str, api_key: Callable[[], str], connect_timeout_s: float,
                 read_timeout_s: float) -> None:
        self._root = base_url.rstrip("/") + "/vision-events"
        self._api_key = api_key
        self._key = api_key()
        add_secrets([self._key])
        self._timeout = (connect_timeout_s, read_timeout_s)
        self._session = requests.Session()
        self._session.trust_env = False  # no .netrc or proxy variables unless configured (reliability.md §4)
        self._session.headers["User-Agent"] = f"mqtt-vision-bridge/{__version__}"

    def close(self) -> None:
        """Close pooled connections."""
        self._session.close()

    def refresh_key(self) -> None:
        """Re-read the key (a rotated `api_key_file` takes effect without a restart)."""
        self._key = self._api_key()
        add_secrets([self._key])

    def _request(self, method: str, path: str, *, json_body: JsonValue = None,
                 files: dict[str, tuple[str | None, bytes] | tuple[str, bytes, str]] | None = None) -> JsonValue:
        return self._exchange(method, path, json_body=json_body, files=files)[0]

    def _exchange(self, method: str, path: str, *, json_body: JsonValue = None,
                  files: dict[str, tuple[str | None, bytes] | tuple[str, bytes, str]] | None = None,
                  is_success_redacted: bool = True) -> tuple[JsonValue, int, str]:
        """One request: (parsed 2xx body, status, body excerpt); any other outcome raises an ApiError. Without
        `is_success_redacted`, a 2xx answer's excerpt comes back as it is: the caller redacts what it keeps."""
        headers = {"Authorization": f"Bearer {self._key}"}
        data = None
        if json_body is not None:
            data = orjson.dumps(json_body)
            headers["Content-Type"] = "application/json"
        try:
            response = self._session.request(method, self._root + path, data=data, files=files, headers=headers,
                                             timeout=self._timeout, allow_redirects=False)
        except requests.Timeout as exc:
            raise RetryableApiError(f"{method} {path}: timed out") from exc
        except requests.RequestException as exc:
            # The exception text holds the URL but never the key, which travels in a header.
            raise RetryableApiError(f"{method} {path}: {type(exc).__name__}") from exc
        status = response.status_code
        if 200 <= status < 300:
            try:
                parsed: JsonValue = orjson.loads(response.content) if response.content else None
            except orjson.JSONDecodeError:
                parsed = None
            excerpt = response.text[:_BODY_EXCERPT]
            # redacted before anything keeps it (dead letters, receipts, ...); for a batch answer (~1 us per event),
            # only when the caller keeps it
            return parsed, status, redact(excerpt) if is_success_redacted else excerpt
        body = redact(response.text[:_BODY_EXCERPT])  # before anything keeps it (dead letters, receipts, ...)
        message = f"{method} {path}: HTTP {status}"
        if status in (401, 403):
            raise AuthApiError(message, status, body)
        if status in (402, 423):
            # plan limit, quota, billing pause: "do not retry until fixed" (docs' production checklist, spec §6)
            raise BillingApiError(message, status, body,
                                  retry_after_s=parse_retry_after(response.headers.get("Retry-After")))
        if 300 <= status < 400:
            # a redirect (e.g. http -> https, or a proxy) is a configuration problem, not a bad event: keep the
            # data and report not ready, like a refused key, instead of dead-lettering every event
            location = redact(response.headers.get("Location", "")[:200])
            raise AuthApiError(f"{message}: the API redirects to {location!r}; set api.base_url to the final URL",
                               status, body)
        if status in (408, 425, 429) or status >= 500:
            raise RetryableApiError(message, status, body,
                                    retry_after_s=parse_retry_after(response.headers.get("Retry-After")))
        raise PermanentApiError(message, status, body)

    def create_batch(self, events: list[JsonDict]) -> BatchAnswer:
        """`POST /vision-events/batch` with up to 100 events (an upsert by eventId); returns what it confirmed."""
        answer, status, excerpt = self._exchange("POST", "/batch", json_body={"events": events},  # type: ignore[dict-item]
                                                 is_success_redacted=False)
        confirmed = BatchAnswer.from_json(answer, status)
        if all(confirmed.is_confirmed(str(event.get("eventId"))) for event in events):
            return confirmed  # nothing will be dead-lettered with this answer: its text is not kept
        # the answer left events out: its text (redacted) goes with their dead letters
        return BatchAnswer.from_json(answer, status, redact(excerpt))

    def upload_image(self, data: bytes, file_name: str, *, name: str = "", metadata: JsonDict | None = None) -> str:
        """`POST /vision-events/upload`: multipart `file`, plus the optional `name` and `metadata` (a JSON-encoded
        object under the customMetadata rules, spec §2.3) when given; returns the sourceId."""
        # `name` and `metadata` are plain form fields (no filename, no type), as the official SDK's encoder sends them
        files: dict[str, tuple[str | None, bytes] | tuple[str, bytes, str]] = {
            "file": (file_name, data, "application/octet-stream")}
        if name:
            files["name"] = (None, name.encode())
        if metadata:
            files["metadata"] = (None, orjson.dumps(metadata))
        answer = self._request("POST", "/upload", files=files)
        source_id = answer.get("sourceId") if isinstance(answer, dict) else None
        if not isinstance(source_id, str) or not source_id:
            raise RetryableApiError("POST /upload: the answer holds no sourceId", 201, redact(str(answer)[:500]))
        return source_id

    def list_use_cases(self, status: str = "active") -> list[JsonDict]:
        """`GET /vision-events/use-cases` (older servers answer under `solutions`)."""
        answer = self._request("GET", f"/use-cases?status={status}")
        if not isinstance(answer, dict):
            return []
        items = answer.get("useCases", answer.get("solutions", []))
        return [item for item in items if isinstance(item, dict)] if isinstance(items, list) else []

    def create_use_case(self, name: str) -> JsonDict:
        """`POST /vision-events/use-cases`; returns `{"id", "name"}`."""
        answer = self._request("POST", "/use-cases", json_body={"name": name})
        return answer if isinstance(answer, dict) else {}

    def query_events(self, body: JsonDict) -> JsonDict:
        """`POST /vision-events/query` (a read scope): one page of events matching `body`'s filters (spec §2.4)."""
        answer = self._request("POST", "/query", json_body=body)
        if not isinstance(answer, dict):
            raise RetryableApiError("POST /query: the answer is not a JSON object", 200, str(answer)[:500])
        return answer
