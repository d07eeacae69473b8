"""The exception tree of the bridge. Every module raises these, never a library's own errors.

    BridgeError
    ├── ConfigError            invalid configuration; carries every problem with its key path
    ├── DecodeError            a message that cannot become a Vision Event (dead-lettered, never retried)
    │   └── RouteNotFound      no route matches the topic
    ├── StorageError           the disk buffer cannot be used
    │   ├── BufferLocked       a second instance on the same buffer directory
    │   └── BufferCorrupt      the SQLite file failed its integrity check
    └── ApiError               the Vision Events API did not accept a request
        ├── RetryableApiError  timeouts, connection errors, 408, 429, 5xx (carries retry_after_s)
        ├── AuthApiError       401/403: keep the data, mark the bridge not ready, retry later
        ├── BillingApiError    402/423 (plan limit, quota, billing pause): keep the data, not ready, retry slowly
        └── PermanentApiError  any other 4xx: the request itself is wrong (carries status and body)

"Retryable" is a type, not a flag: callers decide by `except` clause. Every dead letter says why with one of the
`DeadLetterReason` codes.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "ApiError",
    "AuthApiError",
    "BillingApiError",
    "BridgeError",
    "BufferCorrupt",
    "BufferLocked",
    "ConfigError",
    "DeadLetterReason",
    "DecodeError",
    "PermanentApiError",
    "RetryableApiError",
    "RouteNotFound",
    "StorageError",
]


class DeadLetterReason(StrEnum):
    """Why a message or event went to the dead letters: a short code, stored in the buffer as its text.

    The values are part of the interface (stored dead letters, the `dead_letters{reason}` metric, receipts,
    `mqtt-bridge dlq list --reason`); never change one, only add. A dead letter read back keeps its text as stored.
    """

    # the message (ingest, decoders, router)
    TOPIC_NOT_UTF8 = "topic_not_utf8"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    NO_ROUTE = "no_route"
    TEMPLATE_FIELD_MISSING = "template_field_missing"
    INVALID_JSON = "invalid_json"
    INVALID_MESSAGE = "invalid_message"
    UNKNOWN_FORMAT = "unknown_format"
    UNKNOWN_ALIAS = "unknown_alias"
    BAD_BOX = "bad_box"
    BAD_TIMESTAMP = "bad_timestamp"
    EVENT_ID_MISSING = "event_id_missing"
    INVALID_EVENT = "invalid_event"
    INTERNAL_ERROR = "internal_error"
    # its image
    BAD_IMAGE = "bad_image"
    IMAGE_REJECTED = "image_rejected"
    IMAGE_URL_REFUSED = "image_url_refused"
    IMAGE_FETCH_FAILED = "image_fetch_failed"
    IMAGE_PATH_REFUSED = "image_path_refused"
    IMAGE_READ_FAILED = "image_read_failed"
    # delivery (the flusher) and the buffer itself; the first three hold a buffered record, not the MQTT payload
    API_REJECTED = "api_rejected"
    UPLOAD_REJECTED = "upload_rejected"
    NOT_CONFIRMED = "not_confirmed"  # the API answered 201 but left the event out of `eventIds`, every attempt
    UNREADABLE_RECORD = "unreadable_record"


class BridgeError(Exception):
    """Base class of every error the bridge raises on purpose."""


class ConfigError(BridgeError):
    """The configuration is invalid. `problems` holds one `(key_path, message)` pair per problem."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{path}: {msg}" for path, msg in problems))


class DecodeError(BridgeError):
    """A message cannot become a Vision Event. `reason` says why, `detail` what exactly."""

    def __init__(self, reason: DeadLetterReason, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


class RouteNotFound(DecodeError):
    """No configured route matches the message topic."""


class StorageError(BridgeError):
    """The disk buffer cannot be opened or written."""


class BufferLocked(StorageError):
    """Another process holds the buffer directory."""


class BufferCorrupt(StorageError):
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


class BillingApiError(ApiError):
    """402/423: a plan limit, a quota or a billing pause (docs' production checklist: do not retry until fixed).

    Data is kept; the bridge reports not ready with the API's message and retries slowly (`retry_after_s` is the
    server's `Retry-After`, when it sent one). Nothing is dead-lettered for it.
    """

    def __init__(self, message: str, status: int | None = None, body: str = "",
                 retry_after_s: float | None = None) -> None:
        super().__init__(message, status, body)
        self.retry_after_s = retry_after_s


class PermanentApiError(ApiError):
    """Any other 4xx: this request will never succeed as it is."""
