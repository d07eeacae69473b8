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


def test_logs_json_fields_cannot_be_forged_by_an_argument() -> None:
    """A topic carrying ` reason=… route=…` stays one field: it neither adds nor overrides a field (issue 16)."""
    topic = "factory/x reason=forged route=other event_id=e9"
    out = _emit(Redactor(), JsonFormatter(), "message dead-lettered reason=%s topic=%s route=%s detail=%r",
                "payload_too_large", topic, "inspection", "a 'quoted' detail=x")
    entry = json.loads(out)
    assert entry["fields"] == {"reason": "payload_too_large", "topic": topic, "route": "inspection",
                               "detail": "a 'quoted' detail=x"}
    assert entry["event"] == "message dead-lettered"
    assert topic in entry["message"]


def test_logs_json_fields_take_mixed_and_literal_template_parts() -> None:
    """Conversions without a key still consume their argument; literal pairs, %% and named arguments are read."""
    out = _emit(Redactor(), JsonFormatter(), "api refused status=%s; keeping %d events, retry_in_s=%.1f mode=fast 5%%",
                401, 12, 2.25)
    assert json.loads(out)["fields"] == {"status": "401", "retry_in_s": "2.2", "mode": "fast"}
    named = _emit(Redactor(), JsonFormatter(), "%(what)s happened topic=%(topic)s",
                  {"what": "x topic=forged", "topic": "t/1"})
    entry = json.loads(named)
    assert entry["fields"] == {"topic": "t/1"}
    assert entry["event"] == "x topic=forged happened"
