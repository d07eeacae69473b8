"""The API client treats a redirect as a configuration problem: data is kept, the bridge reports not ready."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from mqtt_bridge.api.client import VisionEventsClient
from mqtt_bridge.errors import AuthApiError


class _Redirect(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # http.server's naming
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(308)
        self.send_header("Location", "https://api.example.invalid/vision-events/batch")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        return


@pytest.fixture
def redirecting_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Redirect)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_api_redirect_is_not_ready_not_a_rejected_event(redirecting_url: str) -> None:
    """A 3xx raises AuthApiError (keep the data, not ready) naming where it points, never PermanentApiError."""
    client = VisionEventsClient(redirecting_url, lambda: "k", 2.0, 2.0)
    try:
        with pytest.raises(AuthApiError) as info:
            client.create_batch([{"eventId": "e1"}])
    finally:
        client.close()
    assert info.value.status == 308
    assert "api.example.invalid" in str(info.value) and "base_url" in str(info.value)
