"""The one redaction step: registered secrets and secret-looking patterns masked, and the log formatter uses it."""

from __future__ import annotations

import logging

from mqtt_bridge.observe.logs import RedactingFormatter
from mqtt_bridge.observe.redact import MASK, add_secrets, redact


def test_redact_masks_registered_secrets_and_patterns() -> None:
    """The configured key and MQTT password themselves, Bearer tokens and api_key= values are all masked."""
    add_secrets(["key-0b7e41d9", "mqtt-pass-55aa", ""])
    text = redact("echo key-0b7e41d9 and pw mqtt-pass-55aa; Authorization: Bearer other-token-1 "
                  "url=https://x/y?api_key=zzz-123&b=1 password=hunter22")
    for secret in ("key-0b7e41d9", "mqtt-pass-55aa", "other-token-1", "zzz-123", "hunter22"):
        assert secret not in text
    assert text.count(MASK) == 5 and "b=1" in text


def test_redact_is_what_the_log_formatter_applies() -> None:
    """A secret registered once (e.g. by the API client) is masked in log lines too: one step for both."""
    add_secrets(["late-registered-secret-77"])
    formatter = RedactingFormatter(logging.Formatter("%(message)s"))
    record = logging.LogRecord("t", logging.INFO, __file__, 1, "body=%s", ("late-registered-secret-77",), None)
    assert formatter.format(record) == f"body={MASK}"
