"""State and rules of the Vision Events emulator: use cases, events, uploads, validation, query and multipart.

Owns: what the emulated API stores and how it judges a request, following `spec/vision-events-api.md` §4.5
and the assumptions of §5 (all-or-nothing batches G4, 400 for an unknown use case G5, asynchronous warnings
G8/G11, query shape G10/G13). Must not open sockets or start threads; `emulator.py` serves it over HTTP. Every
method is thread-safe (one lock per store).

The emulator has one workspace, so events are upserted by `eventId` alone.
"""

from __future__ import annotations

import base64
import binascii
import email.parser
import email.policy
import email.utils
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http import HTTPStatus

import orjson

from mqtt_bridge.model.event import MAX_ID_CHARS, PREDICTION_LISTS, event_problems
from mqtt_bridge.model.values import JsonDict, JsonValue, format_timestamp, parse_timestamp

__all__ = [
    "ALL_SCOPES",
    "IMAGE_CONTENT_TYPES",
    "LOOKBACK_DAYS",
    "MANAGE_SCOPES",
    "MAX_BATCH_EVENTS",
    "READ_SCOPES",
    "WORKSPACE_ID",
    "WRITE_SCOPES",
    "EventStore",
    "Faults",
    "FormField",
    "RequestRejected",
    "Upload",
    "UseCase",
    "parse_multipart",
    "sniff_image_ext",
]

ALL_SCOPES = frozenset({"vision-events:read", "vision-events:write", "vision-events:manage"})
# spec §1.2: reads and writes also accept the device scopes; rename/archive assume manage (G14)
READ_SCOPES = frozenset({"vision-events:read", "device:read"})
WRITE_SCOPES = frozenset({"vision-events:write", "device:update"})
MANAGE_SCOPES = frozenset({"vision-events:manage"})
WORKSPACE_ID = "emulator-workspace"
MAX_BATCH_EVENTS = 100
MAX_QUERY_EVENT_TYPES = 20
DEFAULT_QUERY_LIMIT = 50
MAX_QUERY_LIMIT = 100
LOOKBACK_DAYS = 14
MAX_USE_CASE_NAME_CHARS = 256
IMAGE_CONTENT_TYPES = {
    "jpg": "image/jpeg", "png": "image/png", "webp": "image/webp", "gif": "image/gif", "bmp": "image/bmp",
    "tiff": "image/tiff", "heic": "image/heic", "avif": "image/avif",
}
_CONTEXT_FILTERS = ("deviceId", "streamId", "workflowId")
_USE_CASE_STATUSES = ("active", "inactive")


class RequestRejected(Exception):
    """A request the emulated API refuses. It never leaves the emulator, which answers `{"error": ...}`."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        self.message = message
        super().__init__(f"{status}: {message}")


@dataclass(frozen=True, slots=True)
class UseCase:
    """One use case ("solution") of the emulated workspace."""

    id: str
    name: str
    status: str
    created_at: str
    updated_at: str

    def to_json(self) -> JsonDict:
        """Render as the E5 list item."""
        return {"id": self.id, "name": self.name, "status": self.status, "workspaceId": WORKSPACE_ID,
                "createdAt": self.created_at, "updatedAt": self.updated_at}


@dataclass(frozen=True, slots=True)
class Upload:
    """One image received by E3."""

    source_id: str
    data: bytes
    ext: str
    name: str
    metadata: JsonDict


@dataclass(frozen=True, slots=True)
class FormField:
    """One part of a multipart/form-data body."""

    data: bytes
    filename: str | None


@dataclass(frozen=True, slots=True)
class Faults:
    """Scripted faults of the emulator. Immutable: the emulator swaps in a new value as faults are consumed.

    Attributes:
        statuses: answered one per write request (E1, E2, E3), in order, instead of processing it.
        status_always: answered to every API request until cleared ("API down"); wins over `statuses`.
        retry_after_s: when set, injected status answers carry `Retry-After` (integer seconds when whole).
        delay_s: wait this long before answering any API request (the request is processed after the wait).
        reset_after_commit: for this many successful event writes (E1, E2), store the events and then reset
            the TCP connection instead of answering.
        fail_event_ids: an event write containing one of these ids is refused whole with 400.
    """

    statuses: tuple[int, ...] = ()
    status_always: int | None = None
    retry_after_s: float | None = None
    delay_s: float = 0.0
    reset_after_commit: int = 0
    fail_event_ids: frozenset[str] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        for status in (*self.statuses, *(() if self.status_always is None else (self.status_always,))):
            if isinstance(status, bool) or not isinstance(status, int) or not 400 <= status <= 599:
                raise ValueError(f"fault status {status!r} must be an int in 400..599")
            HTTPStatus(status)  # raises ValueError for a code http.server cannot phrase
        if self.retry_after_s is not None and self.retry_after_s < 0:
            raise ValueError("retry_after_s must be >= 0")
        if self.delay_s < 0:
            raise ValueError("delay_s must be >= 0")
        if self.reset_after_commit < 0:
            raise ValueError("reset_after_commit must be >= 0")

    @classmethod
    def from_json(cls, data: JsonValue) -> Faults:
        """Build from the control API body (same field names). Raises ValueError on a bad value."""
        if not isinstance(data, dict):
            raise ValueError("faults must be a JSON object")
        unknown = set(data) - {"statuses", "status_always", "retry_after_s", "delay_s", "reset_after_commit",
                               "fail_event_ids"}
        if unknown:
            raise ValueError(f"unknown fault fields: {', '.join(sorted(unknown))}")
        statuses, ids = data.get("statuses") or [], data.get("fail_event_ids") or []
        always, retry = data.get("status_always"), data.get("retry_after_s")
        delay, resets = data.get("delay_s") or 0.0, data.get("reset_after_commit") or 0
        if not isinstance(statuses, list) or not all(isinstance(s, int) for s in statuses):
            raise ValueError("statuses must be a list of ints")
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise ValueError("fail_event_ids must be a list of strings")
        if not (always is None or isinstance(always, int)) or not isinstance(resets, int):
            raise ValueError("status_always and reset_after_commit must be ints")
        if not (retry is None or isinstance(retry, int | float)) or not isinstance(delay, int | float):
            raise ValueError("retry_after_s and delay_s must be numbers")
        return cls(statuses=tuple(s for s in statuses if isinstance(s, int)), status_always=always,
                   retry_after_s=None if retry is None else float(retry), delay_s=float(delay),
                   reset_after_commit=resets, fail_event_ids=frozenset(i for i in ids if isinstance(i, str)))

    def to_json(self) -> JsonDict:
        """Render with the field names `from_json` accepts."""
        return {"statuses": list[JsonValue](self.statuses), "status_always": self.status_always,
                "retry_after_s": self.retry_after_s, "delay_s": self.delay_s,
                "reset_after_commit": self.reset_after_commit,
                "fail_event_ids": list[JsonValue](sorted(self.fail_event_ids))}


@dataclass(slots=True)
class _Stored:
    event: JsonDict
    warnings: list[str]
    stamp: datetime
    seq: int


def _is_number(value: JsonValue) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _copy(value: JsonDict) -> JsonDict:
    copied: JsonDict = orjson.loads(orjson.dumps(value))
    return copied


def _now_text() -> str:
    return format_timestamp(datetime.now(UTC))


class EventStore:
    """Everything the emulated workspace holds, with the API's rules for changing and reading it."""

    def __init__(self, *, strict: bool = False, auto_create_use_cases: bool = False,
                 reject_archived: bool = False, lookback_days: int = LOOKBACK_DAYS) -> None:
        """Create an empty store.

        Args:
            strict: also require `eventData` (G1), cap image `sourceId`/`label`/`class` at 256 chars (G2) and
                refuse a query `limit` over 100 instead of clamping it.
            auto_create_use_cases: accept an unknown `useCaseId` by creating it, instead of the 400 of G5.
            reject_archived: refuse events for an archived use case (G6; accepted by default).
            lookback_days: the query window reported as `lookbackDays`; query skips older events.
        """
        self.is_strict = strict
        self.is_auto_creating = auto_create_use_cases
        self.is_rejecting_archived = reject_archived
        self.lookback_days = lookback_days
        self._lock = threading.RLock()
        self._use_cases: dict[str, UseCase] = {}
        self._events: dict[str, _Stored] = {}
        self._writes: dict[str, int] = {}
        self._uploads: dict[str, Upload] = {}
        self._seq = 0

    # ---- use cases (E5-E9) ---------------------------------------------------------------------------------

    def add_use_case(self, name: str, use_case_id: str | None = None, *, status: str = "active") -> UseCase:
        """Create a use case with a trimmed name. Raises RequestRejected(400) for a bad or taken name/id."""
        clean = _use_case_name(name)
        if status not in _USE_CASE_STATUSES:
            raise RequestRejected(400, "status must be active or inactive")
        with self._lock:
            if any(uc.name == clean for uc in self._use_cases.values()):
                raise RequestRejected(400, "A solution with this name already exists")
            new_id = use_case_id or secrets.token_hex(4)
            if not new_id or len(new_id) > MAX_ID_CHARS or new_id in self._use_cases:
                raise RequestRejected(400, f"use case id {new_id[:40]!r} is invalid or taken")
            stamp = _now_text()
            use_case = UseCase(new_id, clean, status, stamp, stamp)
            self._use_cases[new_id] = use_case
            return use_case

    def list_use_cases(self, status: str | None = None) -> list[UseCase]:
        """List use cases, all of them or those with `status`, oldest first."""
        with self._lock:
            return [uc for uc in self._use_cases.values() if status is None or uc.status == status]

    def rename_use_case(self, use_case_id: str, name: str) -> UseCase:
        """Rename (E7). 404 for an unknown id, 400 for a bad or duplicate name."""
        clean = _use_case_name(name)
        with self._lock:
            current = self._known_use_case(use_case_id)
            if any(uc.name == clean and uc.id != use_case_id for uc in self._use_cases.values()):
                raise RequestRejected(400, "A solution with this name already exists")
            renamed = UseCase(current.id, clean, current.status, current.created_at, _now_text())
            self._use_cases[use_case_id] = renamed
            return renamed

    def set_use_case_status(self, use_case_id: str, status: str) -> None:
        """Archive (`inactive`) or unarchive (`active`) a use case (E8, E9). 404 for an unknown id."""
        with self._lock:
            current = self._known_use_case(use_case_id)
            self._use_cases[use_case_id] = UseCase(current.id, current.name, status, current.created_at,
                                                   _now_text())

    def metadata_schema(self, use_case_id: str) -> JsonDict:
        """Infer `{"fields": {key: {"types": [...]}}}` from the stored events of a use case (E10)."""
        names = {bool: "boolean", int: "number", float: "number", str: "string"}
        fields: dict[str, set[str]] = {}
        with self._lock:
            self._known_use_case(use_case_id)
            for stored in self._events.values():
                metadata = stored.event.get("customMetadata")
                if stored.event.get("useCaseId") != use_case_id or not isinstance(metadata, dict):
                    continue
                for key, value in metadata.items():
                    fields.setdefault(key, set()).add(names.get(type(value), "string"))
        schema: JsonDict = {key: {"types": list[JsonValue](sorted(types))}
                            for key, types in sorted(fields.items())}
        return {"fields": schema}

    def _known_use_case(self, use_case_id: str) -> UseCase:
        use_case = self._use_cases.get(use_case_id)
        if use_case is None:
            raise RequestRejected(404, "not found")
        return use_case

    # ---- events (E1, E2) -----------------------------------------------------------------------------------

    def write_events(self, events: list[JsonValue], *, is_batch: bool,
                     reject_ids: frozenset[str] = frozenset()) -> list[str]:
        """Validate every event, then upsert all of them, or none (G4). Returns the ids in request order.

        A problem raises RequestRejected(400) whose message starts with `events[i]: ` in a batch.
        """
        if is_batch and not 1 <= len(events) <= MAX_BATCH_EVENTS:
            raise RequestRejected(400, f"events must hold 1 to {MAX_BATCH_EVENTS} events, got {len(events)}")
        now = datetime.now(UTC)
        with self._lock:
            checked: list[_Stored] = []
            for index, raw in enumerate(events):
                try:
                    checked.append(self._checked(raw, now, reject_ids))
                except RequestRejected as exc:
                    prefix = f"events[{index}]: " if is_batch else ""
                    raise RequestRejected(exc.status, prefix + exc.message) from None
            ids = []
            for stored in checked:
                event_id = str(stored.event["eventId"])
                use_case_id = str(stored.event["useCaseId"])
                if use_case_id not in self._use_cases:  # only reachable with auto_create_use_cases
                    self.add_use_case(f"{use_case_id} (auto)", use_case_id)
                self._seq += 1
                stored.seq = self._seq
                self._events.pop(event_id, None)  # re-insert so dict order is the order of the last write
                self._events[event_id] = stored
                self._writes[event_id] = self._writes.get(event_id, 0) + 1
                ids.append(event_id)
            return ids

    def _checked(self, raw: JsonValue, now: datetime, reject_ids: frozenset[str]) -> _Stored:
        if not isinstance(raw, dict):
            raise RequestRejected(400, "event must be a JSON object")
        if raw.get("eventId") in reject_ids:
            raise RequestRejected(400, "rejected by fault injection")
        # annotation overflow is a warning here, not a 400, so images are checked by _image_warnings instead
        problems = event_problems({k: v for k, v in raw.items() if k != "images"}, now)
        if self.is_strict and not isinstance(raw.get("eventData"), dict):
            problems.append("eventData is required")
        images = raw.get("images")
        if images is not None and not isinstance(images, list):
            problems.append("images must be a list")
        if problems:
            raise RequestRejected(400, "; ".join(problems))
        use_case_id = str(raw["useCaseId"])
        use_case = self._use_cases.get(use_case_id)
        if use_case is None and not self.is_auto_creating:
            raise RequestRejected(400, f"unknown useCaseId {use_case_id[:80]!r}")
        if use_case is not None and use_case.status == "inactive" and self.is_rejecting_archived:
            raise RequestRejected(400, f"use case {use_case_id[:80]!r} is archived")
        warnings = self._image_warnings(images if isinstance(images, list) else [])
        event = dict(raw)
        if warnings and images:
            event["images"] = []  # production drops every image of an event that got a warning (spec §3.3)
        stamp = parse_timestamp(raw["timestamp"])
        assert stamp is not None  # event_problems accepted it
        return _Stored(event, warnings, stamp, 0)

    def _image_warnings(self, images: list[JsonValue]) -> list[str]:
        warnings: list[str] = []
        for index, image in enumerate(images):
            if not isinstance(image, dict):
                raise RequestRejected(400, f"images[{index}] must be an object")
            for key in ("sourceId", "inputSourceId"):
                value = image.get(key)
                if key == "sourceId" and value is None:
                    warnings.append(f"images[{index}].sourceId is missing")
                elif value is not None and (not isinstance(value, str) or value not in self._uploads):
                    warnings.append(f"images[{index}].{key} {str(value)[:80]!r} is not a known upload")
                if self.is_strict and isinstance(value, str) and len(value) > MAX_ID_CHARS:
                    raise RequestRejected(400, f"images[{index}].{key} is longer than {MAX_ID_CHARS} chars")
            for name in PREDICTION_LISTS:
                items = image.get(name)
                if items is None:
                    continue
                if not isinstance(items, list):
                    raise RequestRejected(400, f"images[{index}].{name} must be a list")
                if len(items) > 1000:
                    warnings.append(f"images[{index}].{name} has {len(items)} items, more than 1000")
        return warnings

    def view(self, event_id: str, base_url: str) -> JsonDict | None:
        """Return one stored event as query shows it, or None."""
        with self._lock:
            stored = self._events.get(event_id)
            return None if stored is None else self._view(stored, base_url)

    def all_events(self, base_url: str) -> list[JsonDict]:
        """Return every stored event as query shows it, in the order of their last write (oldest first)."""
        with self._lock:
            return [self._view(stored, base_url) for stored in self._events.values()]

    def write_counts(self) -> dict[str, int]:
        """Return how many times each eventId was written (upserts included)."""
        with self._lock:
            return dict(self._writes)

    def _view(self, stored: _Stored, base_url: str) -> JsonDict:
        event = _copy(stored.event)
        images = event.get("images")
        if isinstance(images, list):
            for image in images:
                upload = self._uploads.get(str(image.get("sourceId"))) if isinstance(image, dict) else None
                if isinstance(image, dict) and upload is not None:
                    image["url"] = f"{base_url}/images/{upload.source_id}.{upload.ext}"
        event["warnings"] = list(stored.warnings)
        return event

    # ---- query (E4) ----------------------------------------------------------------------------------------

    def query(self, body: JsonValue, base_url: str) -> JsonDict:
        """Answer E4: filter, sort newest first, and page with an opaque base64 cursor."""
        if not isinstance(body, dict):
            raise RequestRejected(400, "body must be a JSON object")
        use_case_id = body.get("useCaseId")
        if not isinstance(use_case_id, str) or not use_case_id:
            raise RequestRejected(400, "useCaseId is required")
        limit = body.get("limit", DEFAULT_QUERY_LIMIT)
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise RequestRejected(400, "limit must be a positive integer")
        if limit > MAX_QUERY_LIMIT and self.is_strict:
            raise RequestRejected(400, f"limit must be at most {MAX_QUERY_LIMIT}")
        limit = min(limit, MAX_QUERY_LIMIT)
        offset = _decode_cursor(body.get("cursor"))
        matches = _query_predicate(body, datetime.now(UTC) - timedelta(days=self.lookback_days))
        with self._lock:
            found = sorted((s for s in self._events.values() if matches(s)),
                           key=lambda s: (s.stamp, s.seq), reverse=True)
            page = [self._view(s, base_url) for s in found[offset:offset + limit]]
        has_more = offset + limit < len(found)
        cursor = _encode_cursor(offset + limit) if has_more else None
        return {"events": list[JsonValue](page), "nextCursor": cursor, "hasMore": has_more,
                "lookbackDays": self.lookback_days}

    # ---- uploads (E3) --------------------------------------------------------------------------------------

    def add_upload(self, fields: dict[str, FormField]) -> Upload:
        """Store the `file` of an E3 form with its optional `name` and `metadata` (a JSON string)."""
        file = fields.get("file")
        if file is None or not file.data:
            raise RequestRejected(400, "file is required")
        ext = sniff_image_ext(file.data)
        if ext is None:
            raise RequestRejected(400, "unsupported image format")
        name = fields["name"].data.decode("utf-8", "replace") if "name" in fields else (file.filename or "")
        metadata: JsonDict = {}
        if "metadata" in fields:
            try:
                parsed: JsonValue = orjson.loads(fields["metadata"].data)
            except orjson.JSONDecodeError:
                raise RequestRejected(400, "metadata must be a JSON-encoded object") from None
            if not isinstance(parsed, dict):
                raise RequestRejected(400, "metadata must be a JSON-encoded object")
            # reuse the customMetadata rules of events.py: the docs give uploads the same limits (spec §2.3)
            problems = [p.replace("customMetadata", "metadata", 1)
                        for p in event_problems({"customMetadata": parsed}, datetime.now(UTC))
                        if p.startswith("customMetadata")]
            if problems:
                raise RequestRejected(400, "; ".join(problems))
            metadata = parsed
        upload = Upload("ve-img-" + secrets.token_hex(6), file.data, ext, name, metadata)
        with self._lock:
            self._uploads[upload.source_id] = upload
        return upload

    def upload(self, source_id: str) -> Upload | None:
        """Return one upload, or None."""
        with self._lock:
            return self._uploads.get(source_id)

    def uploads(self) -> dict[str, bytes]:
        """Return every uploaded image's bytes by sourceId."""
        with self._lock:
            return {sid: upload.data for sid, upload in self._uploads.items()}

    def clear_data(self) -> None:
        """Forget events, write counts and uploads; use cases stay."""
        with self._lock:
            self._events.clear()
            self._writes.clear()
            self._uploads.clear()


def _use_case_name(name: object) -> str:
    clean = name.strip() if isinstance(name, str) else ""
    if not 1 <= len(clean) <= MAX_USE_CASE_NAME_CHARS:
        raise RequestRejected(400, f"name must be a string of 1 to {MAX_USE_CASE_NAME_CHARS} characters")
    return clean


def _encode_cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(f"offset:{offset}".encode()).decode("ascii")


def _decode_cursor(cursor: JsonValue) -> int:
    if cursor is None or cursor == "":
        return 0
    try:
        text = base64.urlsafe_b64decode(str(cursor).encode("ascii")).decode("ascii")
        prefix, _, number = text.partition(":")
        if prefix == "offset" and number.isdigit():
            return int(number)
    except (binascii.Error, UnicodeError, ValueError):
        pass  # falls through to the 400 below
    raise RequestRejected(400, "invalid cursor")


def _compare(actual: JsonValue, operator_name: str, expected: JsonValue) -> bool:
    if operator_name == "eq":
        return actual == expected
    if operator_name == "neq":
        return actual != expected
    if operator_name == "contains":
        return isinstance(actual, str) and isinstance(expected, str) and expected in actual
    if isinstance(actual, bool) or isinstance(expected, bool):
        return False
    # two branches, not one `or`, so that mypy narrows each pair to one comparable type
    if isinstance(actual, int | float) and isinstance(expected, int | float):  # noqa: SIM114
        sign = (actual > expected) - (actual < expected)
    elif isinstance(actual, str) and isinstance(expected, str):
        sign = (actual > expected) - (actual < expected)
    else:
        return False
    return sign in {"gt": (1,), "gte": (0, 1), "lt": (-1,), "lte": (-1, 0)}[operator_name]


_OPERATORS = ("eq", "neq", "gt", "gte", "lt", "lte", "contains")


def _query_predicate(body: JsonDict, oldest: datetime) -> Callable[[_Stored], bool]:
    """Compile the E4 filters into one predicate; raises RequestRejected(400) for a malformed filter."""
    use_case_id = body["useCaseId"]
    types: set[JsonValue] = set()
    if "eventTypes" in body and body["eventTypes"] is not None:
        listed = body["eventTypes"]
        if not isinstance(listed, list) or len(listed) > MAX_QUERY_EVENT_TYPES:
            raise RequestRejected(400, f"eventTypes must be a list of at most {MAX_QUERY_EVENT_TYPES} types")
        types.update(t for t in listed if isinstance(t, str))
    if isinstance(body.get("eventType"), str):
        types.add(body["eventType"])
    window = []
    for key in ("startTime", "endTime"):
        value = body.get(key)
        moment = None if value is None else parse_timestamp(value)
        if value is not None and moment is None:
            raise RequestRejected(400, f"{key} must be an ISO 8601 time")
        window.append(moment)
    checks: list[tuple[str, str, str, JsonValue]] = []  # (where, key, operator, value)
    for key in (*_CONTEXT_FILTERS, "externalId"):
        spec = body.get(key)
        if spec is None:
            continue
        if not isinstance(spec, dict) or spec.get("operator") not in ("eq", "neq"):
            raise RequestRejected(400, f'{key} must be {{"operator": "eq"|"neq", "value": ...}}')
        where = "eventData" if key == "externalId" else ""
        checks.append((where, key, str(spec["operator"]), spec.get("value")))
    for list_key, name_key, where in (("customMetadataFilters", "field", "customMetadata"),
                                      ("eventFieldFilters", "column", "eventData")):
        filters = body.get(list_key) or []
        if not isinstance(filters, list):
            raise RequestRejected(400, f"{list_key} must be a list")
        for item in filters:
            if not (isinstance(item, dict) and isinstance(item.get(name_key), str)
                    and item.get("operator") in _OPERATORS):
                raise RequestRejected(400, f"{list_key} items need {name_key}, operator and value")
            checks.append((where, str(item[name_key]), str(item["operator"]), item.get("value")))
    start, end = window

    def matches(stored: _Stored) -> bool:
        event = stored.event
        if event.get("useCaseId") != use_case_id or stored.stamp < oldest:
            return False
        if (types and event.get("eventType") not in types) or (start and stored.stamp < start) or (
                end and stored.stamp > end):
            return False
        for where, key, operator_name, expected in checks:
            scope = event.get(where) if where else event
            actual = scope.get(key) if isinstance(scope, dict) else None
            if not _compare(actual, operator_name, expected):
                return False
        return True

    return matches


# ---- multipart and image sniffing --------------------------------------------------------------------------

def parse_multipart(content_type: str, body: bytes) -> dict[str, FormField]:
    """Split a multipart/form-data body into named fields, with the stdlib email parser (`cgi` is gone)."""
    if not content_type.lower().startswith("multipart/form-data") or "boundary=" not in content_type.lower():
        raise RequestRejected(400, "body must be multipart/form-data with a boundary")
    head = b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n"
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    if not message.is_multipart():
        raise RequestRejected(400, "malformed multipart body")
    fields: dict[str, FormField] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if isinstance(name, tuple):
            name = email.utils.collapse_rfc2231_value(name)
        payload = part.get_payload(decode=True)
        if isinstance(name, str) and isinstance(payload, bytes) and name not in fields:
            fields[name] = FormField(payload, part.get_filename())
    return fields


def sniff_image_ext(data: bytes) -> str | None:
    """Name an image format by its magic bytes: jpg, png, webp, gif, bmp, tiff, heic, avif, or None."""
    signatures = ((b"\xff\xd8\xff", "jpg"), (b"\x89PNG\r\n\x1a\n", "png"), (b"GIF87a", "gif"),
                  (b"GIF89a", "gif"), (b"BM", "bmp"), (b"II*\x00", "tiff"), (b"MM\x00*", "tiff"))
    for magic, ext in signatures:
        if data.startswith(magic):
            return ext
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if data[4:8] == b"ftyp":
        brand = data[8:12]
        if brand in (b"avif", b"avis"):
            return "avif"
        if brand in (b"heic", b"heix", b"hevc", b"heim", b"heis", b"mif1", b"msf1"):
            return "heic"
    return None

