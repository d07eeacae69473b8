"""Secrets never leave (issue 16 item 2): an API gateway that echoes the request's Authorization header (and an
`api_key=` query) in its 4xx answer puts the key into none of the dead letter, the receipt, /status.json, the
trace or the readiness detail (`dlq show` prints the dead letter's body). A real Mosquitto, a real bridge, and a
tiny local HTTP server as the "API"."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import orjson
import pytest
import requests

from mqtt_bridge.devtools.emulator.server import Emulator
from tests.helpers import TEST_ROUTES, BridgeFactory, MosquittoBroker, PahoClient, detection_message, wait_until

pytestmark = pytest.mark.integration

KEY = "sk-live-7f3a9c2e5b1d4e"
TOPIC = "t/factory/L1/cam1/detections"


class _EchoingGateway(BaseHTTPRequestHandler):
    """Answers everything 400 with the request's headers in the body, as some gateways and proxies do."""

    protocol_version = "HTTP/1.1"

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        body = orjson.dumps({"error": "bad request", "echo": dict(self.headers.items()),
                             "hint": f"retry with ?api_key={self.headers.get('Authorization', '')[7:]}",
                             "raw": f"key was {self.headers.get('Authorization', '')[7:]}"})
        self.send_response(400)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, format: str, *args: object) -> None:
        return


@pytest.fixture
def gateway() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _EchoingGateway)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_secrets_an_echoed_key_reaches_no_output(mosquitto: MosquittoBroker, emulator: Emulator,
                                                 bridge_factory: BridgeFactory, gateway: str) -> None:
    """The 4xx answer echoes `Bearer <key>`: the dead letter, the receipt payload, /status.json, the trace and the
    readiness detail hold no trace of the key (the client redacts the answer where it enters the bridge)."""
    routes = [{**route, "topic": str(route["topic"]).replace("{prefix}", "t"), "receipt_topic": "{topic}/receipt"}
              for route in TEST_ROUTES]
    service = bridge_factory(mosquitto, emulator, api={"base_url": gateway, "api_key": KEY}, routes=routes,
                             health={"enabled": True, "port": 0})
    with PahoClient(mosquitto, client_id="secret-receipts").connect() as watcher:
        watcher.subscribe(f"{TOPIC}/receipt")
        with PahoClient(mosquitto, client_id="secret-publisher").connect() as publisher:
            publisher.publish(TOPIC, detection_message(1))
        wait_until(lambda: service.buffer.dead_letter_count >= 1, timeout_s=20, message="dead-lettered")
        wait_until(lambda: len(watcher.payloads()) >= 1, timeout_s=10, message="receipt published")
        receipts = b"\n".join(watcher.payloads())
    (_, letter), = list(service.buffer.dead_letters())
    assert letter.reason == "api_rejected" and letter.api_status == 400
    assert "**********" in letter.api_body  # the echo is kept, masked
    base = f"http://127.0.0.1:{service.health_port}"
    status = requests.get(f"{base}/status.json", timeout=5).text
    trace = requests.get(f"{base}/api/trace", params={"q": TOPIC}, timeout=5).text
    readiness = requests.get(f"{base}/readyz", timeout=5).text
    outputs = {"dead letter": orjson.dumps([letter.api_body, letter.detail]).decode(),
               "receipt": receipts.decode("utf-8", "replace"), "status.json": status, "trace": trace,
               "readyz": readiness, "trace (in memory)": orjson.dumps(service.trace.search(TOPIC)).decode()}
    assert TOPIC in trace
    for name, text in outputs.items():
        assert KEY not in text, f"the API key reached the {name}"
        assert KEY[:12] not in text, f"part of the API key reached the {name}"
