"""Upload labels: the file name, the topic-derived `name` and the `metadata` of an image upload (issue 12 item 7)."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from mqtt_bridge.images.naming import MAX_NAME_CHARS, upload_labels
from mqtt_bridge.model.event import MAX_METADATA_VALUE_CHARS, event_problems
from mqtt_bridge.model.record import Record
from mqtt_bridge.model.values import JsonDict
from tests.helpers import tiny_png

_SAFE = re.compile(r"^[A-Za-z0-9._-]+$")


def _record(topic: str, image_name: str = "", **event: object) -> Record:
    body: JsonDict = {"eventId": "0b6f-e1", "useCaseId": "uc", **event}  # type: ignore[dict-item]
    return Record(event=body, route="line-1", topic=topic, received_at_s=1.0, image=tiny_png(1),
                  image_name=image_name)


def test_upload_labels_name_comes_from_topic_and_event_id_with_the_real_extension() -> None:
    """A message without a file name goes up as `<topic in safe characters>_<eventId>.<type of its bytes>`."""
    labels = upload_labels(_record("plant/line 1/cam#2/détections"))
    assert labels.file_name == "0b6f-e1.png"
    assert labels.name == "plant_line_1_cam_2_d_tections_0b6f-e1.png"
    assert _SAFE.match(labels.name)


def test_upload_labels_keep_the_payload_file_name_but_fix_its_extension() -> None:
    """The payload's own file name names the file part and joins the topic in `name`, with the type of the bytes."""
    labels = upload_labels(_record("cam/2", image_name="frame 9.jpeg"))
    assert labels.file_name == "frame 9.jpeg"
    assert labels.name == "cam_2_frame_9.png"


def test_upload_labels_name_is_capped_and_never_starts_with_a_dot() -> None:
    """A very long topic is cut so that `name` stays within MAX_NAME_CHARS; no hidden-file names."""
    labels = upload_labels(_record("/" + "x" * 500, image_name="." * 3 + "y" * 400 + ".png"))
    assert len(labels.name) <= MAX_NAME_CHARS and labels.name.endswith(".png")
    assert not labels.name.startswith(".") and _SAFE.match(labels.name)


def test_upload_labels_metadata_holds_device_stream_and_route_within_the_documented_limits() -> None:
    """`metadata` has deviceId, streamId and route (only those present), strings cut to 1000 characters, so that
    it passes the customMetadata rules the upload page gives it."""
    labels = upload_labels(_record("t", deviceId="d" * 1500, streamId="cam-2"))
    assert labels.metadata == {"deviceId": "d" * MAX_METADATA_VALUE_CHARS, "streamId": "cam-2", "route": "line-1"}
    event: JsonDict = {"eventId": "e", "useCaseId": "uc", "eventType": "custom",
                       "timestamp": "2026-01-01T00:00:00Z", "customMetadata": labels.metadata}
    assert [p for p in event_problems(event, datetime(2026, 1, 1, tzinfo=UTC)) if "customMetadata" in p] == []
    assert upload_labels(_record("t")).metadata == {"route": "line-1"}
