"""The attachment: an image a message refers to, resolved outside the message, or why there is none.

Owns only the value type, so that the inbound message can carry it from the image references to ingest. Pure:
no I/O, no imports above `model/` (the image stage builds it, `images.attach` consumes it).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Attachment"]


@dataclass(frozen=True, slots=True)
class Attachment:
    """An image a message refers to, resolved outside the message, or why there is none.

    `kind` is where it came from (`inline`, `url`, `file`, `companion`). `problem` is a dead-letter `(reason,
    detail)` when the reference was refused or failed; `missing` says why a referenced image is absent (a
    companion image that did not come in time), noted on the event as `customMetadata.imageMissing`.
    """

    kind: str
    image: bytes = b""
    name: str = ""
    problem: tuple[str, str] | None = None
    missing: str = ""
