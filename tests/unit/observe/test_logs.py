"""Log output: secrets redacted whatever logged them, JSON lines with key=value fields."""

from __future__ import annotations

import io
import json
import logging

from mqtt_bridge.observe.logs import MASK, JsonFormatter, RedactingFormatter, Redactor


def _emit(redactor: Redactor, formatter: logging.Formatter, message: str, *args: object) -> str:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(RedactingFormatter(formatter, redactor))
    logger = logging.getLogger(f"test-logs-{id(stream)}")
    logger.propagate = False
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.warning(message, *args)
    logger.removeHandler(handler)
    return stream.getvalue()


def test_logs_redact_known_secrets_and_secret_patterns() -> None:
    """A configured secret, a Bearer header and api_key=/password= pairs never reach the output."""
    out = _emit(Redactor(["s3cr3t-key-value"]), logging.Formatter("%(message)s"),
                "headers=%s url=%s other=%s", {"Authorization": "Bearer abc.def"}, "http://x/?api_key=k123",
                "password: hunter2 and s3cr3t-key-value")
    for secret in ("s3cr3t-key-value", "abc.def", "k123", "hunter2"):
        assert secret not in out
    assert MASK in out


def test_logs_json_lines_carry_event_and_fields() -> None:
    """The JSON format is one object per line with the message's key=value pairs as fields."""
    out = _emit(Redactor(), JsonFormatter(), "event dead-lettered reason=%s event_id=%s", "api_rejected", "e1")
    entry = json.loads(out)
    assert entry["level"] == "WARNING"
    assert entry["event"] == "event dead-lettered"
    assert entry["fields"] == {"reason": "api_rejected", "event_id": "e1"}
    assert entry["time"].endswith("Z")
