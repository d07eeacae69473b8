"""The attachment: an image a message refers to, resolved outside the message, or why there is none.

Owns only the value type, so that the inbound message can carry it from the image references to ingest. Pure:
no I/O, no imports above `model/` (the image stage builds it, `images.attach` consumes it).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from mqtt_bridge.errors import DeadLetterReason

__all__ = ["Attachment", "ReferenceKind"]

class ReferenceKind(StrEnum):
    """Where a route's image comes from, one per key of `routes[].image`: the kind of an `Attachment`."""

    INLINE = "inline"  # base64_path: a base64 string in the payload itself
    URL = "url"  # fetched over HTTP(S)
    FILE = "file"  # read from a file under allowed roots
    COMPANION = "companion"  # raw bytes published on a topic of their own


@dataclass(frozen=True, slots=True)
class Attachment:
    """An image a message refers to, resolved outside the message, or why there is none.

    `kind` is where it came from (`inline`, `url`, `file`, `companion`). `problem` is a dead-letter `(reason,
    detail)` when the reference was refused or failed; `missing` says why a referenced image is absent (a
    companion image that did not come in time), noted on the event as `customMetadata.imageMissing`.
    """

    kind: ReferenceKind
    image: bytes = b""
    name: str = ""
    problem: tuple[DeadLetterReason, str] | None = None
    missing: str = ""
