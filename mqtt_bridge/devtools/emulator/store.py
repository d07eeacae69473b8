"""The emulated workspace's state: use cases, events and uploads, and how each request changes or reads it.

Owns: the stored data and its invariants: events upserted by `eventId` (the emulator has one workspace; a repeat
replaces the earlier event, spec §2.1), all-or-nothing batches (§5 G4), use cases with trimmed unique names (§2.5) of
which E5 lists only those that have recorded events (spec §6; all of them behind a switch), uploads with their bytes,
ingestion warnings that drop an event's images (§3.4), the metadata schema inferred from stored events (E10) and the
query answer (E4). What is valid is decided by `rules` and `query`; this module applies their verdicts. Must not open
sockets or start threads. Every method is thread-safe (one lock).
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import orjson

from .ingestion import image_warnings
from .messages import RequestRejected
from .multipart import FormField, sniff_image_ext
from .query import compile_query, encode_cursor
from .rules import (
    MAX_ID_CHARS,
    EventContext,
    event_problems,
    metadata_problems,
)
from .values import JsonDict, JsonValue, copy_json, format_time, parse_iso_time

__all__ = ["LOOKBACK_DAYS", "WORKSPACE_ID", "EventStore", "Upload", "UseCase"]

WORKSPACE_ID = "emulator-workspace"
LOOKBACK_DAYS = 14  # §2.4: the default retention
MAX_USE_CASE_NAME_CHARS = 256  # §2.5
_USE_CASE_STATUSES = ("active", "inactive")
_DUPLICATE_NAME = "A solution with this name already exists"  # §2.5, the documented body


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


@dataclass(slots=True)
class _Stored:
    event: JsonDict
    warnings: list[str]
    stamp: datetime
    seq: int


def _now_text() -> str:
    return format_time(datetime.now(UTC))


def _use_case_name(name: object) -> str:
    clean = name.strip() if isinstance(name, str) else ""
    if not 1 <= len(clean) <= MAX_USE_CASE_NAME_CHARS:
        raise RequestRejected(400, f"name must be a string of 1 to {MAX_USE_CASE_NAME_CHARS} characters")
    return clean


class EventStore:
    """Everything the emulated workspace holds, with the API's rules for changing and reading it."""

    def __init__(self, *, strict: bool = False, auto_create_use_cases: bool = False,
                 reject_archived: bool = False, lookback_days: int = LOOKBACK_DAYS,
                 list_unused_use_cases: bool = False) -> None:
        """Create an empty store.

        Args:
            strict: apply the strict-only rules (`eventData` required, G1; image ids, `label` and `class` at most
                256 chars, G2) and refuse a query `limit` over 100 instead of clamping it.
            auto_create_use_cases: accept an unknown `useCaseId` by creating it, instead of the 400 of G5.
            reject_archived: refuse events for an archived use case (G6; accepted by default).
            lookback_days: the query window reported as `lookbackDays`; query skips older events.
            list_unused_use_cases: E5 lists every use case, also those without a recorded event (the documented
                list shows only use cases that have recorded events). An attribute: it may be switched any time.
        """
        self.is_strict = strict
        self.is_auto_creating = auto_create_use_cases
        self.is_rejecting_archived = reject_archived
        self.lookback_days = lookback_days
        self.lists_unused_use_cases = list_unused_use_cases
        self._recorded: set[str] = set()  # use case ids that have recorded an event (what E5 lists)
        self._lock = threading.RLock()
        self._use_cases: dict[str, UseCase] = {}
        self._events: dict[str, _Stored] = {}
        self._writes: dict[str, int] = {}
        self._uploads: dict[str, Upload] = {}
        self._seq = 0

    # ---- use cases (E5-E10) --------------------------------------------------------------------------------

    def add_use_case(self, name: str, use_case_id: str | None = None, *, status: str = "active") -> UseCase:
        """Create a use case with a trimmed name. Raises RequestRejected(400) for a bad or taken name/id."""
        clean = _use_case_name(name)
        if status not in _USE_CASE_STATUSES:
            raise RequestRejected(400, "status must be active or inactive")
        with self._lock:
            if any(uc.name == clean for uc in self._use_cases.values()):
                raise RequestRejected(400, _DUPLICATE_NAME)
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

    def listed_use_cases(self, status: str) -> list[UseCase]:
        """What E5 answers: the use cases with `status` that have recorded events (every one with the switch)."""
        with self._lock:
            return [uc for uc in self.list_use_cases(status)
                    if self.lists_unused_use_cases or uc.id in self._recorded]

    def rename_use_case(self, use_case_id: str, name: str) -> UseCase:
        """Rename (E7). 404 for an unknown id, 400 for a bad or duplicate name."""
        clean = _use_case_name(name)
        with self._lock:
            current = self._known_use_case(use_case_id)
            if any(uc.name == clean and uc.id != use_case_id for uc in self._use_cases.values()):
                raise RequestRejected(400, _DUPLICATE_NAME)
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
            raise RequestRejected(404, "not found")  # the SDK mocks' body for an unknown id (§2.5)
        return use_case

    def _use_case_status(self, use_case_id: str) -> str | None:
        use_case = self._use_cases.get(use_case_id)
        if use_case is None:
            return "active" if self.is_auto_creating else None
        return use_case.status

    # ---- events (E1, E2) -----------------------------------------------------------------------------------

    def write_events(self, events: list[JsonValue], *, is_batch: bool,
                     reject_ids: frozenset[str] = frozenset(), skip: frozenset[int] = frozenset(),
                     is_forgotten: Callable[[str], bool] = lambda _: False) -> list[str]:
        """Judge every event, then upsert all of them, or none (G4). Returns the ids in request order.

        A problem raises RequestRejected(400) whose message starts with `events[i]: ` in a batch. The size of a
        batch is judged by `rules.batch_problems` before this is called. The events at the positions in `skip`
        are judged but not stored, nor returned (a partial success played by a fault). An accepted
        event for which `is_forgotten` says yes (a scripted fault) is confirmed but not kept, and an earlier write of
        it is lost.
        """
        now = datetime.now(UTC)
        with self._lock:
            context = EventContext(now=now, is_strict=self.is_strict, use_case_status=self._use_case_status,
                                   is_rejecting_archived=self.is_rejecting_archived,
                                   is_known_upload=self._uploads.__contains__)
            checked: list[_Stored] = []
            for index, raw in enumerate(events):
                try:
                    checked.append(self._checked(raw, context, reject_ids))
                except RequestRejected as exc:
                    prefix = f"events[{index}]: " if is_batch else ""
                    raise RequestRejected(exc.status, prefix + exc.message) from None
            ids = []
            for position, stored in enumerate(checked):
                if position in skip:
                    continue
                event_id = str(stored.event["eventId"])
                use_case_id = str(stored.event["useCaseId"])
                if use_case_id not in self._use_cases:  # only reachable with auto_create_use_cases
                    self.add_use_case(f"{use_case_id} (auto)", use_case_id)
                if is_forgotten(event_id):
                    self._events.pop(event_id, None)
                    ids.append(event_id)
                    continue
                self._seq += 1
                stored.seq = self._seq
                self._events.pop(event_id, None)  # re-insert so dict order is the order of the last write
                self._events[event_id] = stored
                self._recorded.add(use_case_id)
                self._writes[event_id] = self._writes.get(event_id, 0) + 1
                ids.append(event_id)
            return ids

    def _checked(self, raw: JsonValue, context: EventContext, reject_ids: frozenset[str]) -> _Stored:
        if not isinstance(raw, dict):
            raise RequestRejected(400, "event must be a JSON object")
        if raw.get("eventId") in reject_ids:
            raise RequestRejected(400, "rejected by fault injection")
        problems = event_problems(raw, context)
        if problems:
            raise RequestRejected(400, "; ".join(problems))
        warnings = image_warnings(raw, context)
        event = dict(raw)
        if warnings and raw.get("images"):
            event["images"] = []  # production drops every image of an event that got a warning (spec §3.3)
        stamp = parse_iso_time(raw["timestamp"])
        assert stamp is not None  # the timestamp rules accepted it
        return _Stored(event, warnings, stamp, 0)

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
        """The stored event unchanged plus image `url`s and `warnings` (§5 G10, G11)."""
        event = copy_json(stored.event)
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
        """Answer E4: filter, sort newest first (§2.4), and page with an opaque base64 cursor."""
        oldest = datetime.now(UTC) - timedelta(days=self.lookback_days)
        query = compile_query(body, oldest, is_strict=self.is_strict)
        with self._lock:
            found = sorted((s for s in self._events.values() if query.matches(s.event, s.stamp)),
                           key=lambda s: (s.stamp, s.seq), reverse=True)
            page = [self._view(s, base_url) for s in found[query.offset:query.offset + query.limit]]
        end = query.offset + query.limit
        has_more = end < len(found)
        return {"events": list[JsonValue](page), "nextCursor": encode_cursor(end) if has_more else None,
                "hasMore": has_more, "lookbackDays": self.lookback_days}

    # ---- uploads (E3) --------------------------------------------------------------------------------------

    def add_upload(self, fields: dict[str, FormField]) -> Upload:
        """Store the `file` of an E3 form with its optional `name` and `metadata` (spec §2.3).

        `file` is required and must be one of the documented formats; `metadata` is a JSON-encoded object under
        the `customMetadata` rules. Anything else is a 400.
        """
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
            problems = metadata_problems(parsed, "metadata", EventContext(now=datetime.now(UTC)))
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

    def upload_details(self) -> list[JsonDict]:
        """Return what E3 kept of each upload besides its bytes (name, metadata), oldest first."""
        with self._lock:
            return [{"sourceId": u.source_id, "name": u.name, "metadata": copy_json(u.metadata), "ext": u.ext,
                     "bytes": len(u.data)} for u in self._uploads.values()]

    def uploads(self) -> dict[str, bytes]:
        """Return every uploaded image's bytes by sourceId."""
        with self._lock:
            return {sid: upload.data for sid, upload in self._uploads.items()}

    def clear_data(self) -> None:
        """Forget events, write counts and uploads; use cases stay (unlisted again until their next event)."""
        with self._lock:
            self._recorded.clear()
            self._events.clear()
            self._writes.clear()
            self._uploads.clear()
