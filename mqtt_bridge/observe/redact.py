"""The one redaction step: every text that may hold a secret passes through `redact` before it leaves the process.

Owns: the process-wide set of secret values (the API key, the MQTT password, the health token: registered with
`add_secrets` by whoever reads them) and the secret-looking patterns (`Bearer …`, `api_key=…`, `token=…`,
`password=…`), each replaced by `MASK`. Used by the log formatter (`observe.logs`), where API answers enter the
bridge (`api.client`: error bodies and messages, so that dead letters, receipts, the trace, the status page,
`dlq show` and exports never see a secret), and by the flusher and the status page as a second line. Pure text in,
text out: no I/O, thread-safe.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable

__all__ = ["MASK", "Redactor", "add_secrets", "redact"]

MASK = "**********"
_PATTERNS = (
    re.compile(r"(?i)(bearer\s+)[^\s'\",;]+"),
    re.compile(r"(?i)((?:api_key|apikey|api-key|token|password|passwd)[\"']?\s*[=:]\s*[\"']?)[^\s'\",&;}]+"),
)
_MIN_SECRET = 4  # shorter values would mask ordinary words


class Redactor:
    """Masks the known secrets and secret-looking patterns in a text."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._lock = threading.Lock()
        self._secrets: tuple[str, ...] = ()
        self.add(secrets)

    def add(self, secrets: Iterable[str]) -> None:
        """Also mask these values from now on (empty and very short ones are ignored)."""
        with self._lock:
            known = set(self._secrets) | {s for s in secrets if s and len(s) >= _MIN_SECRET}
            self._secrets = tuple(sorted(known, key=len, reverse=True))  # longest first: no partial masks

    def redact(self, text: str) -> str:
        """`text` with every known secret and secret-looking pattern masked."""
        for secret in self._secrets:
            text = text.replace(secret, MASK)
        for pattern in _PATTERNS:
            text = pattern.sub(lambda m: m.group(1) + MASK, text)
        return text


_PROCESS = Redactor()


def add_secrets(secrets: Iterable[str]) -> None:
    """Register secret values (API key, MQTT password, health token) with the process-wide redaction step."""
    _PROCESS.add(secrets)


def redact(text: str) -> str:
    """`text` with the registered secrets and secret-looking patterns masked: the one redaction step."""
    return _PROCESS.redact(text)
