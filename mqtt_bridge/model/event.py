"""The Vision Event rules the API documents, checked before buffering (spec/vision-events-api.md §3).

Owns: event types, field limits and `event_problems`, so that one bad event never poisons a batch at the API.
Must not do I/O.
"""

from __future__ import annotations

import math
import re
from datetime import datetime, timedelta

from mqtt_bridge.model.values import JsonDict, JsonValue, parse_timestamp

__all__ = ["BRIDGE_METADATA_KEYS", "EVENT_DATA_STRING_FIELDS", "EVENT_TYPES", "FEEDBACK_VALUES", "MAX_ID_CHARS",
           "MAX_METADATA_KEYS", "MAX_PREDICTIONS_PER_LIST", "event_problems", "timestamp_in_window"]


EVENT_TYPES = ("quality_check", "inventory_count", "safety_alert", "custom", "operator_feedback")


MAX_ID_CHARS = 256


MAX_METADATA_KEYS = 100


# customMetadata keys only the bridge writes (issue 16 item 5): a payload key of one of these names is dropped, so a
# message cannot forge them. The names stay unprefixed because dashboards filter on them
# (config/README.md "Route wins over payload").
BRIDGE_METADATA_KEYS = frozenset({
    "imageMissing",  # images/attach: a referenced image that could not be had
    "imageDropped",  # images/shedding: the image was shed when the buffer was full
    "detections", "classes",  # transform/ingest and images/shedding: the summary of boxes without an image
    "sourceTimestamp",  # transform/ingest: the payload time the receive time replaced
    "decoder",  # decode/auto: the decoder that ran
    "droppedKeys",  # transform/ingest: the payload keys dropped for one of these names
})


MAX_METADATA_KEY_CHARS = 100


MAX_METADATA_VALUE_CHARS = 1000


MAX_EXTERNAL_ID_CHARS = 1000


MAX_PREDICTIONS_PER_LIST = 1000


PREDICTION_LISTS = ("objectDetections", "classifications", "instanceSegmentations", "keypoints")


_METADATA_KEY_RE = re.compile(r"^[a-zA-Z0-9_ -]+$")


_VALID_KEYS: set[str] = set()


_YEAR = timedelta(days=365)


_DAY = timedelta(days=1)


# eventData fields that must be strings, per event type (spec §3.2; the enums below are strings too): a number in
# one of them gets the whole batch refused at the API, so it is refused here, for that event alone
EVENT_DATA_STRING_FIELDS: dict[str, tuple[str, ...]] = {
    "quality_check": (),
    "inventory_count": ("location", "itemType"),
    "safety_alert": ("alertType", "description"),
    "custom": ("value",),
    "operator_feedback": ("relatedEventId",),
}


FEEDBACK_VALUES = ("correct", "incorrect", "inconclusive")


_ENUMS: dict[str, dict[str, tuple[str, ...]]] = {
    "quality_check": {"result": ("pass", "fail")},
    "safety_alert": {"severity": ("low", "medium", "high")},
    "operator_feedback": {"feedback": FEEDBACK_VALUES},
}


def _string_problem(event: JsonDict, key: str, limit: int, *, required: bool) -> str | None:
    value = event.get(key)
    if value is None:
        return f"{key} is required" if required else None
    if not isinstance(value, str) or not value:
        return f"{key} must be a non-empty string"
    if len(value) > limit:
        return f"{key} is longer than {limit} characters"
    return None


def _is_valid_key(key: str) -> bool:
    """A customMetadata key the API accepts. The same few keys come with every message: remember them."""
    if key in _VALID_KEYS:
        return True
    if len(key) > MAX_METADATA_KEY_CHARS or not _METADATA_KEY_RE.match(key):
        return False
    if len(_VALID_KEYS) < 10_000:
        _VALID_KEYS.add(key)
    return True


def _metadata_problems(metadata: JsonValue, where: str) -> list[str]:
    if not isinstance(metadata, dict):
        return [f"{where} must be an object"]
    problems = []
    if len(metadata) > MAX_METADATA_KEYS:
        problems.append(f"{where} has {len(metadata)} keys, at most {MAX_METADATA_KEYS} are allowed")
    for key, value in metadata.items():
        if not _is_valid_key(key):
            problems.append(f"{where} key {key[:40]!r} must match [a-zA-Z0-9_ -]+ and be at most 100 characters")
        if isinstance(value, str):
            if len(value) > MAX_METADATA_VALUE_CHARS:
                problems.append(f"{where}.{key[:40]} is longer than {MAX_METADATA_VALUE_CHARS} characters")
        elif isinstance(value, float):
            if not math.isfinite(value):
                problems.append(f"{where}.{key[:40]} must be a finite number")
        elif not isinstance(value, bool | int):
            problems.append(f"{where}.{key[:40]} must be a string, number or boolean")
    return problems


def _event_data_problems(event_type: str, data: JsonValue) -> list[str]:
    if data is None:
        return ["eventData.relatedEventId (the event the feedback is about) is required for operator_feedback"] \
            if event_type == "operator_feedback" else []
    if not isinstance(data, dict):
        return ["eventData must be an object"]
    problems = []
    for key, allowed in _ENUMS.get(event_type, {}).items():
        if key in data and data[key] not in allowed:
            problems.append(f"eventData.{key} must be one of {', '.join(allowed)}")
    for key in EVENT_DATA_STRING_FIELDS.get(event_type, ()):
        if key in data and not isinstance(data[key], str):
            problems.append(f"eventData.{key} must be a string for {event_type}")
    if event_type == "operator_feedback" and not (isinstance(data.get("relatedEventId"), str)
                                                  and data["relatedEventId"]):
        problems.append("eventData.relatedEventId (the event the feedback is about) is required for "
                        "operator_feedback")
    external = data.get("externalId")
    if external is not None and (not isinstance(external, str) or len(external) > MAX_EXTERNAL_ID_CHARS):
        problems.append(f"eventData.externalId must be a string of at most {MAX_EXTERNAL_ID_CHARS} characters")
    if event_type == "inventory_count" and "itemCount" in data:
        count = data["itemCount"]
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            problems.append("eventData.itemCount must be a non-negative integer")
    return problems


def _image_problems(images: JsonValue) -> list[str]:
    if not isinstance(images, list):
        return ["images must be a list"]
    problems = []
    for index, image in enumerate(images):
        if not isinstance(image, dict):
            problems.append(f"images[{index}] must be an object")
            continue
        for name in PREDICTION_LISTS:
            items = image.get(name)
            if items is None:
                continue
            if not isinstance(items, list):
                problems.append(f"images[{index}].{name} must be a list")
            elif len(items) > MAX_PREDICTIONS_PER_LIST:
                problems.append(f"images[{index}].{name} has {len(items)} items, at most "
                                f"{MAX_PREDICTIONS_PER_LIST} are allowed")
    return problems


def timestamp_in_window(stamp: datetime, now: datetime) -> bool:
    """Whether the API accepts this event time: between one year before `now` and one day after it."""
    return now - _YEAR <= stamp <= now + _DAY


def event_problems(event: JsonDict, now: datetime, *, stamp: datetime | None = None) -> list[str]:
    """List every reason the Vision Events API would refuse `event` (empty when it is valid).

    Checks the rules of spec §3: required fields, the event type enum, per-type `eventData` enums and string
    fields (and an operator_feedback's `relatedEventId`), a top-level `comment` being a string, the timestamp
    window (one year back, one day ahead of `now`), id string limits, `customMetadata` key and value rules and the
    1000-item cap per prediction list. `stamp` is the time `event["timestamp"]` was formatted from, when the
    caller formatted it (ingest): its window is checked without parsing the text back (once per event: issue 14).
    """
    problems = [p for p in (
        _string_problem(event, "eventId", MAX_ID_CHARS, required=True),
        _string_problem(event, "useCaseId", MAX_ID_CHARS, required=True),
        _string_problem(event, "deviceId", MAX_ID_CHARS, required=False),
        _string_problem(event, "streamId", MAX_ID_CHARS, required=False),
        _string_problem(event, "workflowId", MAX_ID_CHARS, required=False),
    ) if p]
    event_type = event.get("eventType")
    if event_type not in EVENT_TYPES:
        problems.append(f"eventType must be one of {', '.join(EVENT_TYPES)}")
    else:
        assert isinstance(event_type, str)
        problems.extend(_event_data_problems(event_type, event.get("eventData")))
    if stamp is not None and isinstance(event.get("timestamp"), str):
        stamp = stamp.replace(microsecond=stamp.microsecond // 1000 * 1000)  # the text holds milliseconds
    else:
        stamp = parse_timestamp(event.get("timestamp")) if isinstance(event.get("timestamp"), str) else None
    if stamp is None:
        problems.append("timestamp must be an ISO 8601 string")
    elif not timestamp_in_window(stamp, now):
        problems.append("timestamp must lie between one year ago and tomorrow")
    if "customMetadata" in event:
        problems.extend(_metadata_problems(event["customMetadata"], "customMetadata"))
    if "images" in event:
        problems.extend(_image_problems(event["images"]))
    if "comment" in event and not isinstance(event["comment"], str):
        problems.append("comment must be a string")
    return problems

