"""Log output: one line per event of interest on stderr, as text or JSON, with secrets redacted on the way out.

Owns: the formats (`logging.format: text` is `time LEVEL logger: event key=value ...`; `json` is one object per
line with `time`, `level`, `logger`, `thread`, `event`, `message` and the template's `key=value` pairs as
`fields`, their keys read from the template so that an argument cannot add or override one), and a last line of
defence that passes every formatted record, whatever logged it, through the one redaction step of `observe.redact`
(the configured secrets and `Bearer …`, `api_key=…`, `password=…` patterns become `**********`). Levels:
INFO for the lifecycle, WARNING for retries and reconnects, ERROR for dead letters and dead threads.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections.abc import Iterable, Mapping

from mqtt_bridge.observe.redact import MASK, Redactor, add_secrets, redact

__all__ = ["MASK", "JsonFormatter", "RedactingFormatter", "Redactor", "configure_logging"]

_FIELD = re.compile(r"(\w+)=('[^']*'|\"[^\"]*\"|[^\s;,]+)")
# one %-conversion of a log template (the printf-style spec `logging` uses), and the placeholder it becomes while the
# template's fields are read; NUL never occurs in a template
_CONVERSION = re.compile(r"%%|%(?:\((?P<name>\w+)\))?[#0 +-]*\d*(?:\.\d+)?[hlL]?(?P<conversion>[diouxXeEfFgGcrsa])")
_MARK = "\x00"
_PLACEHOLDER = re.compile(r"\x00(\d+)\x00")
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
    """One JSON object per line.

    `event` and the keys of `fields` come from the message template (`record.msg`), never from its arguments: a
    value such as a topic containing ` reason=forged` stays inside its own field and cannot add or replace one
    (issue 16 item 7). That holds for the lazy `%` arguments style §4.14 asks for; a message formatted before it
    was logged is parsed as it is.
    """

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        event, fields = _structure(record)
        entry: dict[str, object] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname, "logger": record.name, "thread": record.threadName,
            "event": event, "message": message,
        }
        if fields:
            entry["fields"] = fields
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def _structure(record: logging.LogRecord) -> tuple[str, dict[str, str]]:
    """The event text and the `key=value` fields of a record, keys taken from its template only."""
    template = str(record.msg)
    args = record.args
    values: list[str] = []
    position = 0

    def _placeholder(match: re.Match[str]) -> str:
        nonlocal position
        spec = match.group(0)
        if spec == "%%":
            return "%"
        name = match.group("name")
        bare = spec.replace(f"({name})", "", 1) if name else spec
        if name is not None:
            arg = args[name] if isinstance(args, Mapping) else None
        else:
            arg = args[position] if isinstance(args, tuple) and position < len(args) else None
            position += 1
        text = bare % arg
        if match.group("conversion") in "ra" and len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
            text = text[1:-1]  # as the text format shows it, without repr's quotes
        values.append(text)
        return f"{_MARK}{len(values) - 1}{_MARK}"

    try:
        marked = _CONVERSION.sub(_placeholder, template) if args else template
    except (TypeError, ValueError, KeyError, IndexError):  # getMessage() failed the same way: logging reports it
        marked = template

    def _filled(text: str) -> str:
        return _PLACEHOLDER.sub(lambda m: values[int(m.group(1))], text)

    event = _filled(_FIELD.split(marked, maxsplit=1)[0].strip().rstrip(";:,"))
    fields = {key: _filled(value.strip("'\"")) for key, value in _FIELD.findall(marked)}
    return event, fields


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
