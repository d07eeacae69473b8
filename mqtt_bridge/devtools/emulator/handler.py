"""The HTTP plumbing of the emulator: a threading stdlib server and its request handler.

Owns: reading a request off the socket (Content-Length required, 411 otherwise; 413 above the body limit, with
the body drained so the client reads the answer, spec §5 G7), writing the answer (keep-alive HTTP/1.1), and the
TCP reset (SO_LINGER 0) that a scripted fault or a stopped emulator answers with. Everything else is the
`dispatch` callable's. No exception escapes a request: a handler error answers 500.
"""

from __future__ import annotations

import logging
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from .messages import Request, Response, error_response

__all__ = ["HttpServer", "Serving"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Serving:
    """What the HTTP server needs from the emulator behind it."""

    dispatch: Callable[[Request], Response]
    record: Callable[[Request, int, float], None]  # (request, status or 0 for a reset, arrival monotonic s)
    max_body_bytes: Callable[[], int]
    is_current: Callable[[HttpServer], bool]  # False once the emulator stopped or restarted
    fallback_host: Callable[[], str]  # host:port for image URLs when a request has no Host header


class HttpServer(ThreadingHTTPServer):
    """A threading HTTP server that hands each request to `serving.dispatch`."""

    daemon_threads = True  # keep-alive connections must not keep the process alive after stop()

    def __init__(self, address: tuple[str, int], serving: Serving) -> None:
        """Bind `address` and serve requests with `serving`."""
        self.serving = serving
        super().__init__(address, _RequestHandler)


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as requests.Session expects
    server_version = "VisionEventsEmulator/1"
    timeout = 120  # idle keep-alive connections are dropped after this
    disable_nagle_algorithm = True  # headers and body go in two writes; Nagle would add ~40 ms per reply

    def do_GET(self) -> None:  # http.server calls do_<METHOD>
        self._serve(self.command)

    do_POST = do_PUT = do_DELETE = do_GET

    def log_message(self, format: str, *args: Any) -> None:  # the stdlib's signature
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("emulator access client=%s line=%s", self.address_string(), format % args)

    def _serve(self, method: str) -> None:
        server = self.server
        assert isinstance(server, HttpServer)
        serving = server.serving
        if not serving.is_current(server):
            # stopped (or restarted): a kept-alive connection must not outlive its server, or "API down" is a lie
            self._reset()
            return
        at_s = time.monotonic()
        split = urlsplit(self.path)
        length_text = self.headers.get("Content-Length", "0")
        request = Request(method, split.path, dict(parse_qsl(split.query)),
                          {k.lower(): v for k, v in self.headers.items()}, b"",
                          f"http://{self.headers.get('Host') or serving.fallback_host()}")
        limit = serving.max_body_bytes()
        if self.headers.get("Transfer-Encoding") or not length_text.isdigit():
            response = error_response(411, "send a Content-Length (chunked bodies are not supported)")
        elif int(length_text) > limit:
            self._discard(int(length_text))  # drained, so the client reads the 413 instead of a reset
            response = error_response(413, f"body is larger than {limit} bytes")
        else:
            request = replace(request, body=self.rfile.read(int(length_text)))
            try:
                response = serving.dispatch(request)
            except Exception:  # a handler edge: answer 500 rather than drop the connection silently
                logger.exception("emulator handler failed path=%s", request.path)
                response = error_response(500, "emulator internal error")
        # record before answering: a client that has its answer must find its request in the log
        serving.record(request, 0 if response.is_reset else response.status, at_s)
        if response.is_reset:
            self._reset()
        else:
            self._send(response, is_closing=response.status == 411)

    def _send(self, response: Response, *, is_closing: bool) -> None:
        try:
            self.send_response(response.status)
            self.send_header("Content-Type", response.content_type)
            self.send_header("Content-Length", str(len(response.body)))
            for name, value in response.headers:
                self.send_header(name, value)
            if is_closing:  # the unread body would corrupt the next request on this connection
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()
            self.wfile.write(response.body)
        except OSError as exc:
            logger.debug("emulator client went away error=%s", exc)
            self.close_connection = True

    def _discard(self, length: int) -> None:
        while length > 0:
            chunk = self.rfile.read(min(length, 1 << 16))
            if not chunk:
                break
            length -= len(chunk)

    def _reset(self) -> None:
        # SO_LINGER with a zero timeout makes close() send RST: the client sees a reset, never a response
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True
        self.rfile.close()
        self.connection.close()
