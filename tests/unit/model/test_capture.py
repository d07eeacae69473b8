"""The capture line format: one JSON object per line, payload in base64, round trip exact."""

from __future__ import annotations

import orjson
import pytest

from mqtt_bridge.model.capture import CapturedMessage, CaptureFormatError


def test_capture_line_round_trips_topic_payload_qos_retain_and_time() -> None:
    """A message written as a line reads back the same, binary payload included."""
    message = CapturedMessage(b"station/l3/cam1/image/7", b"\xff\xd8\xff\x00raw", 1, True, 1764632590.123456)
    line = message.to_line()
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    document = orjson.loads(line)
    assert document == {"t": 1764632590.123456, "topic": "station/l3/cam1/image/7",
                        "payload_b64": "/9j/AHJhdw==", "qos": 1, "retain": True}
    assert CapturedMessage.from_line(line) == message


def test_capture_line_keeps_a_topic_that_is_not_utf8_as_base64() -> None:
    """A non-UTF-8 topic is written as topic_b64 and read back byte for byte."""
    message = CapturedMessage(b"bad/\xff", b"{}", 0, False, 1.5)
    assert b"topic_b64" in message.to_line()
    assert CapturedMessage.from_line(message.to_line()) == message


def test_capture_line_skips_blank_and_comment_lines() -> None:
    """Empty lines and `#` lines are not messages."""
    assert CapturedMessage.from_line(b"\n") is None
    assert CapturedMessage.from_line("# captured last night") is None


@pytest.mark.parametrize(("line", "words"), [
    (b"not json", "not JSON"),
    (b"[1]", "JSON object"),
    (b'{"t": 1, "payload_b64": ""}', "topic"),
    (b'{"t": 1, "topic": "a"}', "payload_b64"),
    (b'{"t": 1, "topic": "a", "payload_b64": "@@@"}', "base64"),
    (b'{"topic": "a", "payload_b64": ""}', r"t \(Unix seconds\)"),
    (b'{"t": 1, "topic": "a", "payload_b64": "", "qos": 3}', "qos"),
    (b'{"t": 1, "topic": "a", "payload_b64": "", "retain": "yes"}', "retain"),
])
def test_capture_line_refuses_a_bad_line_naming_the_key(line: bytes, words: str) -> None:
    """A line that is not the documented format raises CaptureFormatError saying what is wrong."""
    with pytest.raises(CaptureFormatError, match=words):
        CapturedMessage.from_line(line)
