"""`mqtt-bridge status` talks to the bridge's own health server directly: proxy variables (which would hand the
health token to a proxy) are ignored. The API client does the same (`trust_env = False`)."""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import orjson
import pytest
import requests

from mqtt_bridge.api.client import VisionEventsClient
from mqtt_bridge.cli.status import status
from mqtt_bridge.config.load import parse_config


class _Recorder(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        self.server.seen.append((self.path, self.headers.get("Authorization", "")))
        body = orjson.dumps({"state": {"ready": True}, "answeredBy": self.server.name})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_GET

    def log_message(self, format: str, *args: object) -> None:
        return


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    seen: list[tuple[str, str]]
    name: str


def _serve(name: str) -> _Server:
    server = _Server(("127.0.0.1", 0), _Recorder)
    server.seen, server.name = [], name
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    return server


@pytest.fixture
def servers(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[_Server, _Server]]:
    health, proxy = _serve("health"), _serve("proxy")
    url = f"http://127.0.0.1:{proxy.server_address[1]}"
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.setenv(name, url)
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    try:
        yield health, proxy
    finally:
        for server in (health, proxy):
            server.shutdown()
            server.server_close()


def test_status_ignores_proxy_variables(tmp_path: Path, servers: tuple[_Server, _Server]) -> None:
    """With http_proxy set, status still asks the health server itself, and the proxy never sees the token."""
    health, proxy = servers
    config = parse_config({"api": {"api_key": "k", "base_url": "http://127.0.0.1:9"},
                           "buffer": {"path": str(tmp_path / "buffer"), "min_free_bytes": 1},
                           "health": {"enabled": True, "host": "127.0.0.1", "port": health.server_address[1],
                                      "token": "health-tok-91c2"},
                           "routes": [{"name": "r", "topic": "f/{camera}", "use_case": "uc"}]}, env={})
    out = io.StringIO()
    assert status(config, out, as_json=True) == 0
    assert orjson.loads(out.getvalue())["answeredBy"] == "health"
    assert health.seen == [("/status.json", "Bearer health-tok-91c2")]
    assert proxy.seen == []


def test_api_client_ignores_proxy_variables(servers: tuple[_Server, _Server]) -> None:
    """The API client's session does not read proxy variables either (a requests session would by default)."""
    health, proxy = servers
    client = VisionEventsClient(f"http://127.0.0.1:{health.server_address[1]}", lambda: "api-key-55", 2, 2)
    try:
        client.list_use_cases()
    finally:
        client.close()
    assert [path for path, _ in health.seen] == ["/vision-events/use-cases?status=active"]
    assert proxy.seen == []
    with requests.Session() as plain:  # the control: a default session would have gone to the proxy
        plain.get(f"http://127.0.0.1:{health.server_address[1]}/x", timeout=2)
    assert [path for path, _ in proxy.seen] == [f"http://127.0.0.1:{health.server_address[1]}/x"]
