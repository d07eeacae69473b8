"""The event rules of the Vision Events API, one named row each, written from the API documentation.

Owns: the rule tables the emulator judges a write by. `EVENT_RULES` refuse an event (400, spec §4.1 and §4.5);
`METADATA_RULES` are the `customMetadata` limits, which the docs give upload `metadata` too (spec §2.3);
`BATCH_RULES` judge the body of E2. Each row names the spec section it comes from. What production accepts and
only warns about later (unknown images, annotation overflow) is in `ingestion`.

Written from `spec/vision-events-api.md` (§3 event schema, §4 limits, §5 assumptions, §6 second reading), never
from the bridge's own validator: the emulator stands in for a server someone else wrote, so that a misreading of
the API on the bridge's side shows up as a refusal here. Pure: no I/O, no clock (callers pass `now`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Generic, TypeVar

from .values import JsonDict, JsonValue, parse_iso_time

__all__ = [
    "ANNOTATION_LISTS",
    "BATCH_RULES",
    "EVENT_RULES",
    "EVENT_TYPES",
    "MAX_BATCH_EVENTS",
    "MAX_ID_CHARS",
    "METADATA_RULES",
    "EventContext",
    "Rule",
    "batch_problems",
    "event_images",
    "event_problems",
    "is_number",
    "metadata_problems",
    "short_text",
]

T = TypeVar("T")

EVENT_TYPES = ("quality_check", "inventory_count", "safety_alert", "custom", "operator_feedback")  # §3.1
MAX_ID_CHARS = 256  # useCaseId, deviceId (§3.1); streamId, workflowId, image ids, label, class (§5 G2)
MAX_BATCH_EVENTS = 100  # §2.2
MAX_METADATA_KEYS = 100  # §3.1
MAX_METADATA_KEY_CHARS = 100
MAX_METADATA_STRING_CHARS = 1000
MAX_EXTERNAL_ID_CHARS = 1000  # §3.2
ANNOTATION_LISTS = ("objectDetections", "classifications", "instanceSegmentations", "keypoints")  # §3.3
_METADATA_KEY = re.compile(r"[a-zA-Z0-9_ -]+")
_YEAR, _DAY = timedelta(days=365), timedelta(days=1)
# §3.2: the documented eventData keys of each type, with their type; other keys are stored as they are (§5 G9)
_EVENT_DATA_TYPES: dict[str, dict[str, type]] = {
    "quality_check": {"result": str, "externalId": str},
    "inventory_count": {"location": str, "itemCount": int, "itemType": str, "externalId": str},
    "safety_alert": {"alertType": str, "severity": str, "description": str, "externalId": str},
    "custom": {"value": str, "externalId": str},
    "operator_feedback": {"relatedEventId": str, "feedback": str},
}


@dataclass(frozen=True, slots=True)
class EventContext:
    """What judging an event needs besides the event: the time, the mode and the workspace's state.

    Attributes:
        now: the server's time, for the timestamp window.
        is_strict: apply the rules marked strict-only (the §5 assumptions G1 and G2).
        use_case_status: `active`/`inactive` for a use case id, None when it does not exist.
        is_rejecting_archived: refuse events for an archived use case (§5 G6; accepted by default).
        is_known_upload: whether a `sourceId` names an image uploaded through E3.
    """

    now: datetime
    is_strict: bool = False
    use_case_status: Callable[[str], str | None] = lambda _: "active"
    is_rejecting_archived: bool = False
    is_known_upload: Callable[[str], bool] = lambda _: False


@dataclass(frozen=True, slots=True)
class Rule(Generic[T]):
    """One documented rule: its name, the spec section it comes from, and the check (yields what is wrong)."""

    name: str
    section: str
    check: Callable[[T, EventContext], Iterable[str]]
    is_strict_only: bool = False


def is_number(value: JsonValue) -> bool:
    """A JSON number (booleans are not numbers). Exact types: parsed JSON holds no subclasses, and this runs per box."""
    kind = type(value)
    return kind is int or kind is float


def short_text(value: object) -> str:
    """A value quoted and cut to 80 characters, for an error message."""
    return repr(str(value)[:80])


def event_images(event: JsonDict) -> list[JsonDict]:
    """The image objects of an event (anything else in `images` is left to the `images-list` rule)."""
    images = event.get("images")
    return [i for i in images if isinstance(i, dict)] if isinstance(images, list) else []


def _event_data(event: JsonDict) -> JsonDict:
    data = event.get("eventData")
    return data if isinstance(data, dict) else {}


# ---- customMetadata (§3.1) and upload metadata (§2.3): checked on (metadata, where) --------------------------

def _metadata_max_keys(item: tuple[JsonDict, str], _: EventContext) -> Iterator[str]:
    metadata, where = item
    if len(metadata) > MAX_METADATA_KEYS:
        yield f"{where} has {len(metadata)} keys, at most {MAX_METADATA_KEYS} are allowed"


def _metadata_key_pattern(item: tuple[JsonDict, str], _: EventContext) -> Iterator[str]:
    metadata, where = item
    for key in metadata:
        if not _METADATA_KEY.fullmatch(key):
            yield f"{where} key {key[:40]!r} must match [a-zA-Z0-9_ -]+"


def _metadata_key_length(item: tuple[JsonDict, str], _: EventContext) -> Iterator[str]:
    metadata, where = item
    for key in metadata:
        if len(key) > MAX_METADATA_KEY_CHARS:
            yield f"{where} key {key[:40]!r}... is longer than {MAX_METADATA_KEY_CHARS} characters"


def _metadata_value_type(item: tuple[JsonDict, str], _: EventContext) -> Iterator[str]:
    metadata, where = item
    for key, value in metadata.items():
        if not (isinstance(value, str | bool) or is_number(value)):
            yield f"{where}.{key[:40]} must be a string, number or boolean"


def _metadata_string_length(item: tuple[JsonDict, str], _: EventContext) -> Iterator[str]:
    metadata, where = item
    for key, value in metadata.items():
        if isinstance(value, str) and len(value) > MAX_METADATA_STRING_CHARS:
            yield f"{where}.{key[:40]} is longer than {MAX_METADATA_STRING_CHARS} characters"


METADATA_RULES: tuple[Rule[tuple[JsonDict, str]], ...] = (
    Rule("metadata-max-keys", "§3.1", _metadata_max_keys),
    Rule("metadata-key-pattern", "§3.1", _metadata_key_pattern),
    Rule("metadata-key-length", "§3.1", _metadata_key_length),
    Rule("metadata-value-type", "§3.1", _metadata_value_type),
    Rule("metadata-string-length", "§3.1", _metadata_string_length),
)


def metadata_problems(metadata: JsonDict, where: str, context: EventContext) -> list[str]:
    """Everything `METADATA_RULES` find wrong with a metadata object; `where` names it in the messages."""
    return [problem for rule in METADATA_RULES for problem in rule.check((metadata, where), context)]


# ---- one event (E1, and each item of E2) ---------------------------------------------------------------------

def _required_string(event: JsonDict, key: str) -> Iterator[str]:
    value = event.get(key)
    if value is None:
        yield f"{key} is required"
    elif not isinstance(value, str) or not value:
        yield f"{key} must be a non-empty string"


def _optional_string(event: JsonDict, key: str, limit: int) -> Iterator[str]:
    value = event.get(key)
    if value is None:
        return
    if not isinstance(value, str) or not value:
        yield f"{key} must be a non-empty string"
    elif len(value) > limit:
        yield f"{key} is longer than {limit} characters"


def _event_id_required(event: JsonDict, _: EventContext) -> Iterator[str]:
    yield from _required_string(event, "eventId")


def _event_type_enum(event: JsonDict, _: EventContext) -> Iterator[str]:
    if event.get("eventType") not in EVENT_TYPES:
        yield f"eventType must be one of {', '.join(EVENT_TYPES)}"


def _use_case_id_required(event: JsonDict, _: EventContext) -> Iterator[str]:
    yield from _required_string(event, "useCaseId")


def _use_case_id_length(event: JsonDict, _: EventContext) -> Iterator[str]:
    value = event.get("useCaseId")
    if isinstance(value, str) and len(value) > MAX_ID_CHARS:
        yield f"useCaseId is longer than {MAX_ID_CHARS} characters"


def _use_case_exists(event: JsonDict, context: EventContext) -> Iterator[str]:
    value = event.get("useCaseId")
    if isinstance(value, str) and value and len(value) <= MAX_ID_CHARS and context.use_case_status(value) is None:
        yield f"unknown useCaseId {short_text(value)}"


def _use_case_active(event: JsonDict, context: EventContext) -> Iterator[str]:
    value = event.get("useCaseId")
    if context.is_rejecting_archived and isinstance(value, str) and context.use_case_status(value) == "inactive":
        yield f"use case {short_text(value)} is archived"


def _timestamp_iso(event: JsonDict, _: EventContext) -> Iterator[str]:
    if parse_iso_time(event.get("timestamp")) is None:
        yield "timestamp must be an ISO 8601 string"


def _timestamp_window(event: JsonDict, context: EventContext) -> Iterator[str]:
    stamp = parse_iso_time(event.get("timestamp"))
    if stamp is not None and not context.now - _YEAR <= stamp <= context.now + _DAY:
        yield "timestamp must lie between one year ago and tomorrow"


def _event_data_object(event: JsonDict, _: EventContext) -> Iterator[str]:
    if event.get("eventData") is not None and not isinstance(event.get("eventData"), dict):
        yield "eventData must be an object"


def _event_data_required(event: JsonDict, _: EventContext) -> Iterator[str]:
    if event.get("eventData") is None:
        yield "eventData is required"


def _enum(event_type: str, key: str, allowed: tuple[str, ...]) -> Callable[[JsonDict, EventContext], Iterator[str]]:
    def check(event: JsonDict, _: EventContext) -> Iterator[str]:
        data = _event_data(event)
        if event.get("eventType") == event_type and key in data and data[key] not in allowed:
            yield f"eventData.{key} must be one of {', '.join(allowed)}"

    return check


def _event_data_types(event: JsonDict, _: EventContext) -> Iterator[str]:
    documented = _EVENT_DATA_TYPES.get(str(event.get("eventType")), {})
    for key, value in _event_data(event).items():
        wanted = documented.get(key)
        if wanted is None or value is None:
            continue
        if wanted is int and (isinstance(value, bool) or not isinstance(value, int)):
            yield f"eventData.{key} must be an integer"
        elif wanted is str and not isinstance(value, str):
            yield f"eventData.{key} must be a string"


def _external_id_length(event: JsonDict, _: EventContext) -> Iterator[str]:
    external = _event_data(event).get("externalId")
    if isinstance(external, str) and len(external) > MAX_EXTERNAL_ID_CHARS:
        yield f"eventData.externalId is longer than {MAX_EXTERNAL_ID_CHARS} characters"


def _context_id(key: str) -> Callable[[JsonDict, EventContext], Iterator[str]]:
    def check(event: JsonDict, _: EventContext) -> Iterator[str]:
        yield from _optional_string(event, key, MAX_ID_CHARS)

    return check


def _custom_metadata(event: JsonDict, context: EventContext) -> Iterator[str]:
    metadata = event.get("customMetadata")
    if metadata is None:
        return
    if not isinstance(metadata, dict):
        yield "customMetadata must be an object"
    else:
        yield from metadata_problems(metadata, "customMetadata", context)


def _images_list(event: JsonDict, _: EventContext) -> Iterator[str]:
    images = event.get("images")
    if images is None:
        return
    if not isinstance(images, list):
        yield "images must be a list"
        return
    for index, image in enumerate(images):
        if not isinstance(image, dict):
            yield f"images[{index}] must be an object"


def _annotation_lists(event: JsonDict, _: EventContext) -> Iterator[str]:
    for index, image in enumerate(event_images(event)):
        for name in ANNOTATION_LISTS:
            if image.get(name) is not None and not isinstance(image.get(name), list):
                yield f"images[{index}].{name} must be a list"


def _display_image_position(event: JsonDict, _: EventContext) -> Iterator[str]:
    value = event.get("displayImagePosition")
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
        yield "displayImagePosition must be a non-negative integer (an index into images)"


def _comment_string(event: JsonDict, _: EventContext) -> Iterator[str]:
    if event.get("comment") is not None and not isinstance(event.get("comment"), str):
        yield "comment must be a string"


def _image_id_length(event: JsonDict, _: EventContext) -> Iterator[str]:
    for index, image in enumerate(event_images(event)):
        for key in ("sourceId", "inputSourceId", "label"):
            value = image.get(key)
            if isinstance(value, str) and len(value) > MAX_ID_CHARS:
                yield f"images[{index}].{key} is longer than {MAX_ID_CHARS} characters"


def _class_length(event: JsonDict, _: EventContext) -> Iterator[str]:
    for index, image in enumerate(event_images(event)):
        for name in ANNOTATION_LISTS:
            items = image.get(name)
            for item in items if isinstance(items, list) else []:
                label = item.get("class") if isinstance(item, dict) else None
                if isinstance(label, str) and len(label) > MAX_ID_CHARS:
                    yield f"images[{index}].{name} class is longer than {MAX_ID_CHARS} characters"
                    break


EVENT_RULES: tuple[Rule[JsonDict], ...] = (
    Rule("event-id-required", "§3.1", _event_id_required),
    Rule("event-type-enum", "§3.1", _event_type_enum),
    Rule("use-case-id-required", "§3.1", _use_case_id_required),
    Rule("use-case-id-length", "§3.1", _use_case_id_length),
    Rule("use-case-exists", "§2.1, §5 G5", _use_case_exists),
    Rule("use-case-active", "§5 G6", _use_case_active),  # only with reject_archived
    Rule("timestamp-iso-8601", "§3.1", _timestamp_iso),
    Rule("timestamp-window", "§3.1, §4.1", _timestamp_window),
    Rule("event-data-object", "§3.1", _event_data_object),
    Rule("event-data-required", "§5 G1", _event_data_required, is_strict_only=True),
    Rule("quality-check-result-enum", "§3.2", _enum("quality_check", "result", ("pass", "fail"))),
    Rule("safety-alert-severity-enum", "§3.2", _enum("safety_alert", "severity", ("low", "medium", "high"))),
    Rule("operator-feedback-enum", "§3.2",
         _enum("operator_feedback", "feedback", ("correct", "incorrect", "inconclusive"))),
    Rule("event-data-field-types", "§3.2", _event_data_types),
    Rule("external-id-length", "§3.2", _external_id_length),
    Rule("device-id-length", "§3.1", _context_id("deviceId")),
    Rule("stream-id-length", "§3.1, §5 G2", _context_id("streamId")),
    Rule("workflow-id-length", "§3.1, §5 G2", _context_id("workflowId")),
    Rule("custom-metadata-object", "§3.1", _custom_metadata),  # then METADATA_RULES
    Rule("images-list", "§3.1, §3.3", _images_list),
    Rule("annotation-lists", "§3.3", _annotation_lists),
    Rule("display-image-position-integer", "§3.1", _display_image_position),
    Rule("comment-string", "§3.1", _comment_string),
    Rule("image-id-length", "§5 G2", _image_id_length, is_strict_only=True),
    Rule("annotation-class-length", "§5 G2", _class_length, is_strict_only=True),
)


def event_problems(event: JsonDict, context: EventContext) -> list[str]:
    """Everything `EVENT_RULES` find wrong with one event (empty: the API accepts it)."""
    return [problem for rule in EVENT_RULES if context.is_strict or not rule.is_strict_only
            for problem in rule.check(event, context)]


# ---- the E2 body (§2.2) --------------------------------------------------------------------------------------

def _batch_events_list(body: JsonDict, _: EventContext) -> Iterator[str]:
    if not isinstance(body.get("events"), list):
        yield "events is required and must be a list"


def _batch_size(body: JsonDict, _: EventContext) -> Iterator[str]:
    events = body.get("events")
    if isinstance(events, list) and not 1 <= len(events) <= MAX_BATCH_EVENTS:
        yield f"events must hold 1 to {MAX_BATCH_EVENTS} events, got {len(events)}"


BATCH_RULES: tuple[Rule[JsonDict], ...] = (
    Rule("batch-events-list", "§2.2", _batch_events_list),
    Rule("batch-size", "§2.2, §4.1", _batch_size),
)


def batch_problems(body: JsonValue, context: EventContext) -> list[str]:
    """Everything `BATCH_RULES` find wrong with an E2 body (not with its events)."""
    if not isinstance(body, dict):
        return ["body must be a JSON object"]
    return [problem for rule in BATCH_RULES for problem in rule.check(body, context)]
