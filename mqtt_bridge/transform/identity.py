"""Event identity: every rule that gives an event its `eventId`, in one place.

Owns: the precedence of the eventId sources and the deterministic ids derived from a message, so that ingest (what
reaches the API), delivery receipts (for messages dead-lettered before they had an event) and the publisher SDK
(which waits for the receipt of the message it sent) agree on the id of a message. The precedence, for event
`index` of the `count` events one message yields:

1. the message's own id (the canonical format's `event_id` field, read by its decoder, or `own_event_id`);
2. the route's `event_id_field` (a dotted payload path holding a non-empty string or integer); the events after
   the first of a multi-event message get `-<index>` appended; a field that holds no id is an error
   (`event_id_missing`);

   an id from the payload (1 or 2) is namespaced by the route: UUIDv5 of route name and value
   (`namespaced_event_id`), because the API overwrites an event whose eventId repeats, so two routes or two
   devices that number their messages the same way would overwrite each other's events. A route with
   `event_id_raw: true` sends the value as it is (it must then be unique across the workspace);
3. an object key the decoder found (a tracker id): UUIDv5 of route and key, so updates of one object overwrite;
4. UUIDv5 of route, topic and payload bytes (`derive_event_id`): a redelivered message gets the same id, so the API
   overwrites instead of duplicating; the further events of one message hash their index in as well.

Imports only the model and errors (no decoders, no Pillow): the SDK uses it. Pure: no I/O.
"""

from __future__ import annotations

import hashlib
import uuid
from typing import Final

from mqtt_bridge.errors import DeadLetterReason, DecodeError
from mqtt_bridge.model.values import JsonValue, lookup_path

__all__ = ["EVENT_ID_NAMESPACE", "OWN_ID_FIELD", "derive_event_id", "event_id_for",
           "format_reads_own_id", "message_event_id", "namespaced_event_id", "own_event_id"]

EVENT_ID_NAMESPACE: Final = uuid.UUID("6c1f3a4e-2b7d-5e8f-9a10-4b2c3d4e5f60")
# further events of one message, and events keyed by an object id, hash in namespaces of their own
_PART_NAMESPACE: Final = uuid.UUID("0b6c9f1e-7d2a-5c3b-8e4f-1a2b3c4d5e6f")
_KEY_NAMESPACE: Final = uuid.UUID("9d8e7f6a-5b4c-5d3e-8f2a-1b0c9d8e7f6a")
_FIELD_NAMESPACE: Final = uuid.UUID("3f2a1b0c-9d8e-5f7a-8b6c-5d4e3f2a1b0c")  # ids taken from the payload
OWN_ID_FIELD: Final = "event_id"  # the canonical message's own id (decode.canonical reads the same field)
# route formats whose decoder may read the message's own id: canonical, and auto (when it detects canonical)
_OWN_ID_FORMATS: Final = frozenset({"canonical", "auto"})


_NAMESPACE_BYTES: Final = EVENT_ID_NAMESPACE.bytes  # `UUID.bytes` is computed on every access
_VARIANTS: Final = "89ab89ab89ab89ab"  # the RFC 4122 variant digit, by the digest's digit there (its low two bits)


def _uuid5_text(digest: bytes) -> str:
    """`str(uuid.UUID(bytes=digest[:16], version=5))`, without building the UUID (once per event: issue 14)."""
    text = digest[:16].hex()
    # version 5 in the 13th digit, the variant (0b10xx) in the 17th
    return f"{text[:8]}-{text[8:12]}-5{text[13:16]}-{_VARIANTS[int(text[16], 16)]}{text[17:20]}-{text[20:]}"


def derive_event_id(route: str, topic: str, payload: bytes) -> str:
    """UUIDv5 of route, topic and payload bytes: a redelivered message gets the same id, so the API overwrites."""
    digest = hashlib.sha1(b"".join((_NAMESPACE_BYTES, route.encode(), b"\n", topic.encode(), b"\n")),
                          usedforsecurity=False)
    digest.update(payload)  # the payload is hashed where it is, not copied into one string first
    return _uuid5_text(digest.digest())


def _uuid5(namespace: uuid.UUID, *parts: bytes) -> str:
    digest = hashlib.sha1(namespace.bytes + b"\n".join(parts), usedforsecurity=False).digest()
    return _uuid5_text(digest)


def namespaced_event_id(route: str, value: str) -> str:
    """UUIDv5 of route name and an id taken from the payload: the same value on two routes gives two events."""
    return _uuid5(_FIELD_NAMESPACE, route.encode(), value.encode())


def own_event_id(document: JsonValue) -> str | None:
    """The message's own id, the top-level `event_id` the canonical decoder reads (a non-empty string), or None.

    (The canonical decoder also refuses an id over 256 characters; such a message is dead-lettered, never
    delivered.)"""
    if not isinstance(document, dict):
        return None
    value = document.get(OWN_ID_FIELD)
    return value if isinstance(value, str) and value else None


def format_reads_own_id(format_name: str) -> bool:
    """Whether a route of this payload format may take the message's own `event_id` (`own_event_id`)."""
    return format_name in _OWN_ID_FORMATS


def _field_id(document: JsonValue, path: str) -> str | None:
    """The id a route's `event_id_field` holds: a non-empty string or an integer (not a boolean), else None."""
    value = lookup_path(document, path)
    if not isinstance(value, str | int) or isinstance(value, bool) or not str(value):
        return None
    return str(value)


def event_id_for(route: str, topic: str, payload: bytes, document: JsonValue, *, own_id: str | None,
                 id_field: str | None, key: str | None = None, index: int = 0, count: int = 1,
                 raw_ids: bool = False) -> str:
    """The eventId of event `index` of the `count` a message yields, by the precedence above.

    `own_id` is the id the decoder read from the message itself, `id_field` the route's `event_id_field`, `key` an
    object key the decoder found; `raw_ids` (the route's `event_id_raw`) sends payload ids unnamespaced. Raises
    DecodeError `event_id_missing` when `id_field` holds no id.
    """
    if own_id is not None:
        return own_id if raw_ids else namespaced_event_id(route, own_id)
    if id_field:
        value = _field_id(document, id_field)
        if value is None:
            raise DecodeError(DeadLetterReason.EVENT_ID_MISSING, f"payload field {id_field!r} holds no id")
        value = value if index == 0 or count == 1 else f"{value}-{index}"
        return value if raw_ids else namespaced_event_id(route, value)
    if key is not None:
        return _uuid5(_KEY_NAMESPACE, route.encode(), key.encode())
    if index == 0:
        return derive_event_id(route, topic, payload)
    return _uuid5(_PART_NAMESPACE, str(index).encode(), route.encode(), topic.encode(), payload)


def message_event_id(route: str, topic: str, payload: bytes, document: JsonValue, *, id_field: str | None,
                     reads_own_id: bool = True, raw_ids: bool = False) -> str:
    """The eventId of a message's first event, from the message alone (no decoder ran: it was dead-lettered, or
    it is being sent). Never raises: when `id_field` holds no id (ingest dead-letters that message as
    `event_id_missing`) the id derived from the message is used.

    `reads_own_id` says whether the route's format carries the message's own id (`own_event_id`); `document` is
    the parsed payload (None when it is not JSON); `raw_ids` is the route's `event_id_raw`.
    """
    own_id = own_event_id(document) if reads_own_id else None
    try:
        return event_id_for(route, topic, payload, document, own_id=own_id, id_field=id_field, raw_ids=raw_ids)
    except DecodeError:
        return derive_event_id(route, topic, payload)
