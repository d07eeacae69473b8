"""What an uploaded image is called and tagged in the workspace: the `name` and `metadata` fields of
`POST /vision-events/upload` (spec/vision-events-api.md §2.3, issue 12 item 7).

Owns: the file name of the multipart `file` part (the payload's own file name, else `<eventId>.<ext>`), the upload
`name` (derived from the MQTT topic and that file name, in safe characters, with the extension of the image's real
type) and the upload `metadata` (`deviceId`, `streamId`, `route` of the event, under the customMetadata rules the
docs give for it: keys `[a-zA-Z0-9_ -]+`, string values of at most 1000 characters). Pure: no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mqtt_bridge.images.checks import file_extension, sniff_image_type
from mqtt_bridge.model.event import MAX_METADATA_VALUE_CHARS
from mqtt_bridge.model.record import Record
from mqtt_bridge.model.values import JsonDict

__all__ = ["MAX_NAME_CHARS", "UploadLabels", "upload_labels"]

# The docs give no limit for `name` (§2.3); 200 keeps it a valid file name on every file system a user may save
# the image to (255 bytes), with room for a suffix a download tool adds.
MAX_NAME_CHARS = 200
_TOPIC_CHARS = 120
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_METADATA_FIELDS = (("deviceId", "deviceId"), ("streamId", "streamId"))


@dataclass(frozen=True, slots=True)
class UploadLabels:
    """The parts of one upload request besides the bytes."""

    file_name: str  # the multipart `file` part's filename
    name: str  # the `name` field: how the image is listed in the workspace
    metadata: JsonDict  # the `metadata` field (sent JSON-encoded)


def _safe(text: str) -> str:
    """`text` in file-name-safe characters: every run of anything else becomes one `_`; no leading dot."""
    return _UNSAFE.sub("_", text).strip("_").lstrip(".")


def upload_labels(record: Record) -> UploadLabels:
    """The file name, `name` and `metadata` of the upload of `record.image`.

    The extension always follows the bytes (a PNG named `frame.jpg` in its payload goes up as `.png`).
    """
    extension = file_extension(sniff_image_type(record.image) or "jpeg")
    file_name = record.image_name or f"{record.event_id}.{extension}"
    stem = _safe(file_name.rsplit(".", 1)[0] if "." in file_name else file_name) or _safe(record.event_id)
    topic = _safe(record.topic)[:_TOPIC_CHARS].rstrip("_.")
    base = f"{topic}_{stem}" if topic else stem
    name = f"{base[:MAX_NAME_CHARS - len(extension) - 1]}.{extension}"
    metadata: JsonDict = {}
    for key, field_name in _METADATA_FIELDS:
        value = record.event.get(field_name)
        if isinstance(value, str) and value:
            metadata[key] = value[:MAX_METADATA_VALUE_CHARS]
    if record.route:
        metadata["route"] = record.route[:MAX_METADATA_VALUE_CHARS]
    return UploadLabels(file_name=file_name, name=name, metadata=metadata)
