"""The exception tree of the bridge. Every module raises these, never a library's own errors.

    BridgeError
    ├── ConfigError            invalid configuration; carries every problem with its key path
    ├── DecodeError            a message that cannot become a Vision Event (dead-lettered, never retried)
    │   ├── PayloadTooLarge
    │   └── RouteNotFound      no route matches the topic
    ├── BufferError_           the disk buffer cannot be used
    │   ├── BufferLocked       a second instance on the same buffer directory
    │   └── BufferCorrupt      the SQLite file failed its integrity check
    └── ApiError               the Vision Events API did not accept a request
        ├── RetryableApiError  timeouts, connection errors, 408, 429, 5xx (carries retry_after_s)
        ├── AuthApiError       401/403: keep the data, mark the bridge not ready, retry later
        └── PermanentApiError  any other 4xx: the request itself is wrong (carries status and body)

"Retryable" is a type, not a flag: callers decide by `except` clause.
"""

from __future__ import annotations

__all__ = [
    "ApiError",
    "AuthApiError",
    "BridgeError",
    "BufferCorrupt",
    "BufferError_",
    "BufferLocked",
    "ConfigError",
    "DecodeError",
    "PayloadTooLarge",
    "PermanentApiError",
    "RetryableApiError",
    "RouteNotFound",
]


class BridgeError(Exception):
    """Base class of every error the bridge raises on purpose."""


class ConfigError(BridgeError):
    """The configuration is invalid. `problems` holds one `(key_path, message)` pair per problem."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{path}: {msg}" for path, msg in problems))


class DecodeError(BridgeError):
    """A message cannot become a Vision Event. `reason` is a short machine-friendly code."""

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


class PayloadTooLarge(DecodeError):
    """The payload is over the configured size cap; it was not parsed."""


class RouteNotFound(DecodeError):
    """No configured route matches the message topic."""


class BufferError_(BridgeError):
    """The disk buffer cannot be opened or written."""


class BufferLocked(BufferError_):
    """Another process holds the buffer directory."""


class BufferCorrupt(BufferError_):
    """The buffer database failed its integrity check."""


class ApiError(BridgeError):
    """The Vision Events API did not accept a request."""

    def __init__(self, message: str, status: int | None = None, body: str = "") -> None:
        self.status = status
        self.body = body
        super().__init__(message)


class RetryableApiError(ApiError):
    """Worth retrying as is: network trouble, timeouts, 408, 429 and 5xx."""

    def __init__(self, message: str, status: int | None = None, body: str = "",
                 retry_after_s: float | None = None) -> None:
        super().__init__(message, status, body)
        self.retry_after_s = retry_after_s


class AuthApiError(ApiError):
    """401/403: the key is wrong or lacks a scope. Data is kept; the bridge reports not ready."""


class PermanentApiError(ApiError):
    """Any other 4xx: this request will never succeed as it is."""
