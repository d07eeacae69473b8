"""Log output: one line per event of interest on stderr, as text or JSON, with secrets redacted on the way out.

Owns: the formats (`logging.format: text` is `time LEVEL logger: event key=value ...`; `json` is one object per
line with `time`, `level`, `logger`, `thread`, `event`, `message` and the message's `key=value` pairs as
`fields`), and a last line of defence that replaces the configured secrets (API key, MQTT password, health token)
and `Bearer …`, `api_key=…`, `password=…` patterns by `**********` in every record, whatever logged it. Levels:
INFO for the lifecycle, WARNING for retries and reconnects, ERROR for dead letters and dead threads.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections.abc import Iterable

__all__ = ["MASK", "JsonFormatter", "RedactingFormatter", "Redactor", "configure_logging"]

MASK = "**********"
_PATTERNS = (
    re.compile(r"(?i)(bearer\s+)[^\s'\",;]+"),
    re.compile(r"(?i)((?:api_key|apikey|token|password|passwd)[\"']?\s*[=:]\s*[\"']?)[^\s'\",&;}]+"),
)
_FIELD = re.compile(r"(\w+)=('[^']*'|\"[^\"]*\"|[^\s;,]+)")
_NOISY = ("amqtt", "transitions", "urllib3")


class Redactor:
    """Masks the known secrets and secret-looking patterns in a text."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)

    def redact(self, text: str) -> str:
        """`text` with every known secret and secret-looking pattern masked."""
        for secret in self._secrets:
            text = text.replace(secret, MASK)
        for pattern in _PATTERNS:
            text = pattern.sub(lambda m: m.group(1) + MASK, text)
        return text


class RedactingFormatter(logging.Formatter):
    """Formats with `inner`, then masks secrets in the whole line (message and traceback). Records are not
    changed, so other handlers (a test's capture, say) see them as they were logged."""

    def __init__(self, inner: logging.Formatter, redactor: Redactor) -> None:
        super().__init__()
        self._inner = inner
        self._redactor = redactor

    def format(self, record: logging.LogRecord) -> str:
        return self._redactor.redact(self._inner.format(record))


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever `sys.stderr` is at the time of the record (test captures come and go)."""

    @property
    def stream(self) -> object:
        return sys.stderr

    @stream.setter
    def stream(self, value: object) -> None:
        pass


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        event = _FIELD.split(message, maxsplit=1)[0].strip().rstrip(";:,")
        entry: dict[str, object] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname, "logger": record.name, "thread": record.threadName,
            "event": event, "message": message,
        }
        fields = {key: value.strip("'\"") for key, value in _FIELD.findall(message)}
        if fields:
            entry["fields"] = fields
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(level: str, fmt: str = "text", secrets: Iterable[str] = ()) -> None:
    """Send every log record to stderr in `fmt` (text or json), at `level`, with `secrets` redacted."""
    handler = _StderrHandler()
    formatter: logging.Formatter
    if fmt == "json":
        formatter = JsonFormatter()
    else:
        formatter = logging.Formatter("%(asctime)s.%(msecs)03dZ %(levelname)s %(name)s: %(message)s",
                                      "%Y-%m-%dT%H:%M:%S")
        formatter.converter = time.gmtime
    handler.setFormatter(RedactingFormatter(formatter, Redactor(secrets)))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in _NOISY:
        logging.getLogger(noisy).setLevel(logging.WARNING)
