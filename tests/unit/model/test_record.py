"""The byte layout of buffered records and dead letters: what an older bridge wrote still reads."""

from __future__ import annotations

import struct

import orjson

from mqtt_bridge.errors import DeadLetterReason
from mqtt_bridge.model.record import DeadLetter, Record


def test_record_written_before_issue_11_with_extra_still_reads() -> None:
    """A header of the previous version, with its `"extra": {}`, reads as the same record; new headers omit it."""
    header = orjson.dumps({"v": 1, "event": {"eventId": "e1"}, "route": "r", "topic": "t", "received_at_s": 2.5,
                           "image_name": "a.jpg", "extra": {}})
    old = struct.pack(">I", len(header)) + header + b"\xff\xd8jpeg"
    record = Record.from_bytes(old)
    assert record == Record(event={"eventId": "e1"}, route="r", topic="t", received_at_s=2.5, image=b"\xff\xd8jpeg",
                            image_name="a.jpg")
    (length,) = struct.unpack_from(">I", record.to_bytes())
    assert "extra" not in orjson.loads(record.to_bytes()[4:4 + length])
    assert Record.from_bytes(record.to_bytes()) == record


def test_dead_letter_stores_its_reason_as_the_same_text() -> None:
    """A reason given as an enum member is stored, and held, as its plain text; a stored text reads back as is,
    even one this version does not know."""
    letter = DeadLetter(reason=DeadLetterReason.API_REJECTED, detail="d", topic="t", route="r", payload=b"\x00",
                        received_at_s=1.0, dead_at_s=2.0)
    assert type(letter.reason) is str and letter.reason == "api_rejected"
    assert orjson.loads(letter.to_bytes())["reason"] == "api_rejected"
    assert DeadLetter.from_bytes(letter.to_bytes()) == letter
    stored = orjson.loads(letter.to_bytes()) | {"reason": "some_future_reason"}
    assert DeadLetter.from_bytes(orjson.dumps(stored)).reason == "some_future_reason"


def test_dead_letter_reason_values_never_change() -> None:
    """The reason codes are an interface (stored dead letters, metrics labels, receipts, `dlq list --reason`)."""
    assert sorted(reason.value for reason in DeadLetterReason) == sorted([
        "topic_not_utf8", "payload_too_large", "no_route", "template_field_missing", "invalid_json",
        "invalid_message", "unknown_format", "unknown_alias", "bad_box", "bad_timestamp", "event_id_missing",
        "invalid_event", "internal_error", "bad_image", "image_rejected", "image_url_refused", "image_fetch_failed",
        "image_path_refused", "image_read_failed", "api_rejected", "upload_rejected", "not_confirmed",
        "unreadable_record"])
