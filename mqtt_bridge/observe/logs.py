"""Log output: one line per event of interest on stderr, as text or JSON, with secrets redacted on the way out.

Owns: the formats (`logging.format: text` is `time LEVEL logger: event key=value ...`; `json` is one object per
line with `time`, `level`, `logger`, `thread`, `event`, `message` and the message's `key=value` pairs as
`fields`), and a last line of defence that passes every formatted record, whatever logged it, through the one
redaction step of `observe.redact` (the configured secrets and `Bearer …`, `api_key=…`, `password=…` patterns
become `**********`). Levels:
INFO for the lifecycle, WARNING for retries and reconnects, ERROR for dead letters and dead threads.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections.abc import Iterable

from mqtt_bridge.observe.redact import MASK, Redactor, add_secrets, redact

__all__ = ["MASK", "JsonFormatter", "RedactingFormatter", "Redactor", "configure_logging"]

_FIELD = re.compile(r"(\w+)=('[^']*'|\"[^\"]*\"|[^\s;,]+)")
_NOISY = ("amqtt", "transitions", "urllib3")


class RedactingFormatter(logging.Formatter):
    """Formats with `inner`, then masks secrets in the whole line (message and traceback) with `redactor`, by
    default the process-wide redaction step. Records are not changed, so other handlers (a test's capture, say)
    see them as they were logged."""

    def __init__(self, inner: logging.Formatter, redactor: Redactor | None = None) -> None:
        super().__init__()
        self._inner = inner
        self._redactor = redactor

    def format(self, record: logging.LogRecord) -> str:
        line = self._inner.format(record)
        return self._redactor.redact(line) if self._redactor is not None else redact(line)


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
    add_secrets(secrets)
    handler.setFormatter(RedactingFormatter(formatter))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in _NOISY:
        logging.getLogger(noisy).setLevel(logging.WARNING)
