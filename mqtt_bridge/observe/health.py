"""The health server: `/healthz` (threads alive), `/readyz` (broker connected, buffer writable, API key accepted;
with the reason in words when not ready),
`/metrics` (Prometheus), and the status page (`/status`, `/status.json`, `/api/trace?q=`), on a small stdlib HTTP
server bound to 127.0.0.1 by default.

Owns: routing requests and the optional token (`health.token`): with a token, `/metrics` and the status page need
`Authorization: Bearer <token>` or the page's login cookie (set by opening `/status?token=…` once, which redirects
to a URL without it); `/healthz` and `/readyz` stay open for probes but then answer only their status. Never logs
query strings (they may hold the token). Must not change the bridge's state.
"""

from __future__ import annotations

import hmac
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import orjson

from mqtt_bridge.observe.status_page import PAGE_HTML, StateView, StatusReport

__all__ = ["COOKIE", "HealthServer", "MetricsSource", "StateSource"]

log = logging.getLogger(__name__)

COOKIE = "mqtt_bridge_token"
StateSource = StateView
MetricsSource = Callable[[], tuple[bytes, str]]
_JSON = "application/json"
_LOGIN_HTML = b"""<!doctype html><html><head><meta charset="utf-8"><title>mqtt-vision-bridge</title></head>
<body style="font:15px system-ui;margin:40px"><h1>mqtt-vision-bridge</h1><p>This status page needs the token
(<code>health.token</code>).</p><form method="get" action="/status"><input type="password" name="token"
autofocus> <button>Open</button></form></body></html>"""


class HealthServer:
    """Serves health, metrics and the status page in a daemon thread (it holds no data)."""

    def __init__(self, host: str, port: int, state: Callable[[], StateView], *,
                 metrics: MetricsSource | None = None, report: StatusReport | None = None,
                 token: str | None = None) -> None:
        self._state = state
        self._metrics = metrics
        self._report = report
        self._token = token or None
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # http.server's naming
                outer._handle(self)

            def log_message(self, format: str, *args: object) -> None:
                # the request line may carry ?token=: log the path only
                log.debug("health request method=%s path=%s", self.command, urlsplit(self.path).path[:200])

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
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

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    # --- requests ---------------------------------------------------------------------------------------------

    def _is_authorized(self, request: BaseHTTPRequestHandler) -> bool:
        if self._token is None:
            return True
        offered = ""
        header = request.headers.get("Authorization", "")
        if header.startswith("Bearer "):
            offered = header[len("Bearer "):].strip()
        else:
            for part in request.headers.get("Cookie", "").split(";"):
                name, _, value = part.strip().partition("=")
                if name == COOKIE:
                    offered = value
        return hmac.compare_digest(offered.encode(), self._token.encode())

    def _handle(self, request: BaseHTTPRequestHandler) -> None:
        headers: dict[str, str] = {}
        try:
            url = urlsplit(request.path)
            path = url.path
            authorized = self._is_authorized(request)
            if path in ("/healthz", "/readyz"):
                status, body, kind = self._probe(path, authorized)
            elif path in ("/", "/status", "/status/") and not authorized:
                status, body, kind, headers = self._login(parse_qs(url.query).get("token", [""])[0])
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
                if self._token is not None and "token" in parse_qs(url.query):
                    status, body, kind, headers = self._login(parse_qs(url.query)["token"][0])
                else:
                    status, body, kind = 200, PAGE_HTML.encode(), "text/html; charset=utf-8"
            elif path == "/status.json" and self._report is not None:
                status, body, kind = 200, orjson.dumps(self._report.status()), _JSON
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
                           "buffer_writable": state.buffer_writable, "backpressured": state.backpressured,
                           "buffer_depth": state.buffer_depth, "error": state.last_error})
        return (200 if state.is_ready else 503), orjson.dumps(detail), _JSON

    def _login(self, offered: str) -> tuple[int, bytes, str, dict[str, str]]:
        """`/status?token=…`: a right token sets an HttpOnly cookie and redirects to the clean URL."""
        if self._token is not None and offered and hmac.compare_digest(offered.encode(), self._token.encode()):
            return 303, b"", "text/plain", {
                "Location": "/status",
                "Set-Cookie": f"{COOKIE}={self._token}; HttpOnly; SameSite=Strict; Path=/"}
        return 401, _LOGIN_HTML, "text/html; charset=utf-8", {}
