"""The health server: `/healthz` (threads alive), `/readyz` (broker connected, buffer writable, API key accepted;
with the reason in words when not ready),
`/metrics` (Prometheus), and the status page (`/status`, `/status.json`, `/api/trace?q=`, and the last hour's
`/status/history.json` and `/status/charts`), on a small stdlib HTTP server bound to 127.0.0.1 by default.

Owns: routing requests, the optional token (`health.token`) and the defences of the port (reliability.md §4):

- with a token, `/metrics` and the status page need `Authorization: Bearer <token>` or the page's login cookie;
  `/healthz` and `/readyz` stay open for probes but then answer only their status. The login form POSTs the token
  (never in a URL); the cookie is a signed session value (HMAC-SHA256 with a random per-process key, with its issue
  time), never the token itself, and is worth nothing after a restart or `_SESSION_S`;
- the `Host` header must name localhost, an IP address (probes and Prometheus use the pod IP), the bind address or
  one of `health.allowed_hosts`: a DNS-rebinding page (`Host: evil.example`) gets 421, and a POST whose `Origin`
  is not such a host gets 403;
- a fixed pool of `_WORKERS` threads with at most `_PENDING` connections waiting for one (more are closed at
  once), and a socket timeout (`idle_timeout_s`) on every connection: idle or slow clients cannot hold a thread
  each, or one for long;
- a warning at start when it listens beyond loopback without a token.

Never logs query strings. Must not change the bridge's state.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, HTTPServer
from urllib.parse import parse_qs, urlsplit

import orjson

from mqtt_bridge.observe.status_page import StateView, StatusReport

__all__ = ["COOKIE", "HealthServer", "MetricsSource", "StateSource", "is_loopback"]

log = logging.getLogger(__name__)

COOKIE = "mqtt_bridge_session"
StateSource = StateView
MetricsSource = Callable[[], tuple[bytes, str]]
_JSON = "application/json"
_HTML = "text/html; charset=utf-8"
_LOGIN_HTML = b"""<!doctype html><html><head><meta charset="utf-8"><title>mqtt-vision-bridge</title></head>
<body style="font:15px system-ui;margin:40px"><h1>mqtt-vision-bridge</h1><p>This status page needs the token
(<code>health.token</code>).</p><form method="post" action="/status"><input type="password" name="token"
autofocus> <button>Open</button></form></body></html>"""
_WORKERS = 8  # threads serving requests, whatever the number of connections
_PENDING = 32  # accepted connections waiting for a worker; past that a new one is closed at once
_IDLE_TIMEOUT_S = 5.0  # a connection that sends nothing (or too slowly) for this long is closed
_SESSION_S = 12 * 3600.0  # a login cookie's lifetime
_MAX_FORM = 4096  # bytes of a login form
_LOCAL_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


class _PooledHTTPServer(HTTPServer):
    """An HTTPServer whose requests run on a fixed pool (not a thread per connection), bounded in waiting ones."""

    request_queue_size = 128  # the listen backlog: a burst of connections is accepted (and refused) quickly

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], workers: int,
                 pending: int) -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="health-worker")
        self._slots = threading.BoundedSemaphore(workers + pending)
        self.refused = 0
        super().__init__(address, handler)

    def process_request(self, request: socket.socket, client_address: object) -> None:  # type: ignore[override]
        if not self._slots.acquire(blocking=False):
            self.refused += 1
            self.shutdown_request(request)  # every worker busy and the waiting list full: no thread for this one
            return
        try:
            self._pool.submit(self._serve, request, client_address)
        except RuntimeError:  # the pool is shut down (stopping)
            self._slots.release()
            self.shutdown_request(request)

    def _serve(self, request: socket.socket, client_address: object) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:  # a request must never take a worker down
            log.debug("health request ended with an error", exc_info=True)
        finally:
            self.shutdown_request(request)
            self._slots.release()

    def server_close(self) -> None:
        super().server_close()
        self._pool.shutdown(wait=False, cancel_futures=True)


def _host_name(header: str) -> str:
    """The host of a `Host` header (or an Origin's netloc) without its port, lower case, without a final dot."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:].split("]", 1)[0]
    if header.count(":") == 1:
        header = header.split(":", 1)[0]
    return header.rstrip(".")


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def is_loopback(host: str) -> bool:
    """Whether a bind address is loopback only (127.0.0.0/8, ::1, localhost)."""
    if host.lower() in _LOCAL_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class HealthServer:
    """Serves health, metrics and the status page in a daemon thread (it holds no data)."""

    def __init__(self, host: str, port: int, state: Callable[[], StateView], *,
                 metrics: MetricsSource | None = None, report: StatusReport | None = None,
                 token: str | None = None, allowed_hosts: Iterable[str] = (),
                 idle_timeout_s: float = _IDLE_TIMEOUT_S, workers: int = _WORKERS, pending: int = _PENDING) -> None:
        self._state = state
        self._metrics = metrics
        self._report = report
        self._token = token or None
        self._session_key = secrets.token_bytes(32)  # per process: a restart ends every session
        self._host = host
        names = {_host_name(name) for name in allowed_hosts if name}
        if host and not _is_ip(_host_name(host)):
            names.add(_host_name(host))
        self._allowed_hosts = frozenset(names | _LOCAL_NAMES)
        outer = self

        class Handler(BaseHTTPRequestHandler):
            timeout = idle_timeout_s  # StreamRequestHandler sets it on the socket: idle connections are closed

            def do_GET(self) -> None:  # http.server's naming
                outer._handle(self)

            def do_POST(self) -> None:
                outer._handle(self)

            def log_message(self, format: str, *args: object) -> None:
                # never the query string: log the path only
                log.debug("health request method=%s path=%s", self.command, urlsplit(self.path).path[:200])

        self._server = _PooledHTTPServer((host, port), Handler, workers, pending)
        self._thread = threading.Thread(target=self._server.serve_forever, name="health", daemon=True)

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        port: int = self._server.server_address[1]
        return port

    def start(self) -> None:
        """Start serving."""
        self._thread.start()
        host = self._server.server_address[0]
        log.info("health server listening url=http://%s:%d/status auth=%s", host, self.port,
                 "bearer" if self._token else "none")
        if self._token is None and not is_loopback(self._host):
            log.warning("health server listens beyond loopback without a token host=%s port=%d: anyone who can "
                        "reach it reads the status page, the trace and the metrics; set health.token (or bind "
                        "health.host to 127.0.0.1)", self._host, self.port)

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    # --- requests ---------------------------------------------------------------------------------------------

    def _is_authorized(self, request: BaseHTTPRequestHandler) -> bool:
        if self._token is None:
            return True
        header = request.headers.get("Authorization", "")
        if header.startswith("Bearer "):
            return hmac.compare_digest(header[len("Bearer "):].strip().encode(), self._token.encode())
        for part in request.headers.get("Cookie", "").split(";"):
            name, _, value = part.strip().partition("=")
            if name == COOKIE and self._is_session(value):
                return True
        return False

    def _sign(self, issued: str) -> str:
        return hmac.new(self._session_key, f"session.{issued}".encode(), hashlib.sha256).hexdigest()

    def _new_session(self) -> str:
        """A cookie value: issue time and its HMAC under the per-process key (no token in it)."""
        issued = str(int(time.time()))
        return f"{issued}.{self._sign(issued)}"

    def _is_session(self, value: str) -> bool:
        issued, _, mac = value.partition(".")
        if not issued.isdigit() or not hmac.compare_digest(mac.encode(), self._sign(issued).encode()):
            return False
        return 0 <= time.time() - int(issued) < _SESSION_S

    def _is_allowed_host(self, header: str | None) -> bool:
        """DNS-rebinding defence: the Host names this bridge (localhost, an IP, the bind name, allowed_hosts)."""
        if not header:
            return True  # HTTP/1.0 without Host: no browser sends that
        name = _host_name(header)
        return name in self._allowed_hosts or _is_ip(name)

    def _is_allowed_origin(self, origin: str | None) -> bool:
        if not origin:
            return True
        return origin != "null" and self._is_allowed_host(urlsplit(origin).netloc or "-")

    def _handle(self, request: BaseHTTPRequestHandler) -> None:
        headers: dict[str, str] = {}
        try:
            url = urlsplit(request.path)
            path = url.path
            authorized = self._is_authorized(request)
            if not self._is_allowed_host(request.headers.get("Host")):
                status, body, kind = 421, b'{"error": "this Host is not served here (health.allowed_hosts)"}', _JSON
            elif request.command == "POST":
                status, body, kind, headers = self._post(request, path)
            elif path in ("/healthz", "/readyz"):
                status, body, kind = self._probe(path, authorized)
            elif path in ("/", "/status", "/status/") and not authorized:
                status, body, kind = 401, _LOGIN_HTML, _HTML
            elif not authorized:
                status, body, kind = 401, b'{"error": "token required"}', _JSON
                headers["WWW-Authenticate"] = 'Bearer realm="mqtt-vision-bridge"'
            elif path == "/metrics" and self._metrics is not None:
                status = 200
                body, kind = self._metrics()
            elif path in ("/", "/status/"):
                status, body, kind = 303, b"", "text/plain"
                headers["Location"] = "/status"
            elif path == "/status" and self._report is not None:
                status, body, kind = 200, self._report.page().encode(), _HTML
            elif path == "/status.json" and self._report is not None:
                status, body, kind = 200, orjson.dumps(self._report.status()), _JSON
            elif path == "/status/history.json" and self._report is not None and self._report.has_history:
                status, body, kind = 200, orjson.dumps(self._report.history()), _JSON
            elif path == "/status/charts" and self._report is not None and self._report.has_history:
                status, body, kind = 200, self._report.charts().encode(), _HTML
            elif path == "/api/trace" and self._report is not None:
                query = parse_qs(url.query).get("q", [""])[0]
                status, body, kind = 200, orjson.dumps(self._report.search(query)), _JSON
            else:
                status, body, kind = 404, b'{"error": "not found"}', _JSON
        except Exception:  # an HTTP request must never take the server down
            log.exception("health request failed")
            status, body, kind = 500, b'{"error": "internal"}', _JSON
        try:
            request.send_response(status)
            request.send_header("Content-Type", kind)
            request.send_header("Content-Length", str(len(body)))
            request.send_header("Cache-Control", "no-store")
            for name, value in headers.items():
                request.send_header(name, value)
            request.end_headers()
            request.wfile.write(body)
        except OSError:
            log.debug("health client went away")

    def _probe(self, path: str, authorized: bool) -> tuple[int, bytes, str]:
        state = self._state()
        if path == "/healthz":
            detail: dict[str, object] = {"alive": state.is_alive}
            if authorized:
                detail["error"] = state.last_error
            return (200 if state.is_alive else 503), orjson.dumps(detail), _JSON
        detail = {"ready": state.is_ready}
        if authorized:
            detail.update({"reason": state.not_ready_reason, "mqtt_connected": state.mqtt_connected,
                           "mqtt_problem": state.mqtt_problem, "api_ready": state.api_ready,
                           "api_reason": state.api_not_ready_reason,
                           "buffer_writable": state.buffer_writable, "backpressured": state.backpressured,
                           "buffer_depth": state.buffer_depth, "error": state.last_error})
        return (200 if state.is_ready else 503), orjson.dumps(detail), _JSON

    def _post(self, request: BaseHTTPRequestHandler, path: str) -> tuple[int, bytes, str, dict[str, str]]:
        """The login form (`POST /status`, `token=…`): a right token sets the session cookie and redirects."""
        if path not in ("/status", "/login"):
            return 405, b'{"error": "method not allowed"}', _JSON, {"Allow": "GET"}
        if not self._is_allowed_origin(request.headers.get("Origin")):
            return 403, b'{"error": "cross-origin login refused"}', _JSON, {}
        length_text = request.headers.get("Content-Length", "")
        if not length_text.isdigit() or int(length_text) > _MAX_FORM:
            return 413, b'{"error": "a login form is a few bytes"}', _JSON, {}
        offered = parse_qs(request.rfile.read(int(length_text)).decode("utf-8", "replace")).get("token", [""])[0]
        if self._token is not None and offered and hmac.compare_digest(offered.encode(), self._token.encode()):
            return 303, b"", "text/plain", {
                "Location": "/status",
                "Set-Cookie": f"{COOKIE}={self._new_session()}; HttpOnly; SameSite=Strict; Path=/; "
                              f"Max-Age={int(_SESSION_S)}"}
        return 401, _LOGIN_HTML, _HTML, {}
