"""What one HTTP request and one answer are inside the emulator, and the API's error answer.

Owns: `Request`, `Response`, `RequestRejected` (a refusal that becomes `{"error": "<message>"}`, the error body
shape of spec §4.1), and the helpers that build JSON answers and read JSON bodies. Must not open sockets.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from .values import JsonValue

__all__ = ["Request", "RequestRejected", "Response", "error_response", "json_response", "load_json"]


class RequestRejected(Exception):
    """A request the emulated API refuses. It never leaves the emulator, which answers `{"error": message}`."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        self.message = message
        super().__init__(f"{status}: {message}")


@dataclass(frozen=True, slots=True)
class Request:
    """One HTTP request as the routes see it."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names
    body: bytes
    base_url: str  # how the client reached us, for image URLs


@dataclass(frozen=True, slots=True)
class Response:
    """One answer; `is_reset` answers with a TCP reset instead (a scripted fault)."""

    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()
    is_reset: bool = False


def json_response(status: int, body: JsonValue, headers: tuple[tuple[str, str], ...] = ()) -> Response:
    """Answer `status` with a JSON body."""
    return Response(status, orjson.dumps(body), headers=headers)


def error_response(status: int, message: str, headers: tuple[tuple[str, str], ...] = ()) -> Response:
    """Answer `status` with the documented error body `{"error": message}` (spec §4.1)."""
    return json_response(status, {"error": message}, headers)


def load_json(body: bytes) -> JsonValue:
    """Parse a JSON request body (an empty body reads as `{}`). Raises RequestRejected(400) when it is not JSON."""
    try:
        value: JsonValue = orjson.loads(body or b"{}")
    except orjson.JSONDecodeError:
        raise RequestRejected(400, "body must be valid JSON") from None
    return value
