"""The health server: `/healthz` (threads alive), `/readyz` (broker connected, buffer writable, API key accepted)
and `/metrics` (Prometheus text format), on a small stdlib HTTP server bound to 127.0.0.1 by default.

Owns: turning `ServiceState` and `Stats` into HTTP answers. Must not change the bridge's state.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Protocol

import orjson

from mqtt_bridge.stats import Stats

__all__ = ["HealthServer", "StateSource"]

log = logging.getLogger(__name__)


class StateSource(Protocol):
    """What the health server reads: a `ServiceState`-like object."""

    @property
    def is_alive(self) -> bool: ...

    @property
    def is_ready(self) -> bool: ...

    @property
    def mqtt_connected(self) -> bool: ...

    @property
    def api_ready(self) -> bool: ...

    @property
    def buffer_writable(self) -> bool: ...

    @property
    def backpressured(self) -> bool: ...

    @property
    def buffer_depth(self) -> int: ...

    @property
    def dead_letters(self) -> int: ...

    @property
    def last_error(self) -> str: ...


def _metric_name(name: str) -> str:
    return "mqtt_bridge_" + name


def render_metrics(stats: Stats, state: StateSource) -> str:
    """Prometheus text exposition of every counter and gauge."""
    lines = []
    for name, labelled in sorted(stats.snapshot().items()):
        metric = _metric_name(name)
        for label, value in sorted(labelled.items()):
            key = "route" if name.startswith("messages") or name == "boxes_dropped" else "reason"
            if name == "api_retries":
                key = "status"
            suffix = f'{{{key}="{label}"}}' if label else ""
            lines.append(f"{metric}{suffix} {value}")
    for name, value in (("buffer_depth", state.buffer_depth), ("dead_letters_stored", state.dead_letters),
                        ("mqtt_connected", int(state.mqtt_connected)), ("api_ready", int(state.api_ready)),
                        ("ready", int(state.is_ready))):
        lines.append(f"{_metric_name(name)} {value}")
    return "\n".join(lines) + "\n"


class HealthServer:
    """Serves health and metrics in a daemon thread (it holds no data)."""

    def __init__(self, host: str, port: int, state: Callable[[], StateSource], stats: Stats) -> None:
        self._state = state
        self._stats = stats
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # http.server's naming
                outer._handle(self)

            def log_message(self, format: str, *args: object) -> None:
                log.debug("health %s", format % args)

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
        log.info("health server listening url=http://%s:%d/healthz", self._server.server_address[0], self.port)

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def _handle(self, request: BaseHTTPRequestHandler) -> None:
        try:
            state = self._state()
            path = request.path.split("?", 1)[0]
            if path == "/healthz":
                status, body, kind = (200 if state.is_alive else 503), orjson.dumps(
                    {"alive": state.is_alive, "error": state.last_error}), "application/json"
            elif path == "/readyz":
                status, body, kind = (200 if state.is_ready else 503), orjson.dumps({
                    "ready": state.is_ready, "mqtt_connected": state.mqtt_connected, "api_ready": state.api_ready,
                    "buffer_writable": state.buffer_writable, "backpressured": state.backpressured,
                    "buffer_depth": state.buffer_depth, "error": state.last_error}), "application/json"
            elif path == "/metrics":
                status, body, kind = 200, render_metrics(self._stats, state).encode(), "text/plain; version=0.0.4"
            else:
                status, body, kind = 404, b'{"error": "not found"}', "application/json"
        except Exception:
            log.exception("health request failed")
            status, body, kind = 500, b'{"error": "internal"}', "application/json"
        request.send_response(status)
        request.send_header("Content-Type", kind)
        request.send_header("Content-Length", str(len(body)))
        request.end_headers()
        request.wfile.write(body)
